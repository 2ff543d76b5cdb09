import { Validator } from '@seriousme/openapi-schema-validator'
import t from 'tap'
import { request } from 'undici'
import { OPENAPI_PATH } from '../src/plugins/openapi.ts'
import { BOOK_COMPLETION_PATH, DeliveryAcceptedSchema, ErrorSchema } from '../src/routes/book-completion.ts'
import { DeliverySchema } from '../src/webhooks/payload.ts'
import { freshDatabase, startApp, testConfig } from './helper.ts'

/** The OpenAPI document is generated from the very schemas the route validates and serializes with. */

const running = await startApp(t, testConfig(await freshDatabase(t)))
const asJson = (schema: unknown) => JSON.parse(JSON.stringify(schema))

const response = await request(`${running.url}${OPENAPI_PATH}`)
const text = await response.body.text()
const document = JSON.parse(text)
const operation = document.paths?.[BOOK_COMPLETION_PATH]?.post

t.test('GET /openapi.json answers a valid OpenAPI 3.1 document, without a signature', async (t) => {
  t.equal(response.statusCode, 200)
  t.match(response.headers['content-type'], /^application\/json/)
  t.equal(document.openapi, '3.1.0')
  const verdict = await new Validator().validate(document)
  t.same(verdict, { valid: true }, 'valid against the OpenAPI 3.1 schema')
  t.same(Object.keys(document.paths).sort(), ['/api/webhooks/book-completion', '/health', '/ready'], 'the document does not list itself')
})

t.test('the webhook route: its request body, headers and responses are the TypeBox schemas', async (t) => {
  t.ok(operation, 'POST /api/webhooks/book-completion is described')
  t.match(operation, { summary: String, description: /webhook-signature|webhook-id/, tags: ['webhooks'] })
  t.same(operation.requestBody.content['application/json'].schema, asJson(DeliverySchema), 'body = DeliverySchema')
  t.equal(operation.requestBody.required, true)
  t.same(operation.responses['200'].content['application/json'].schema, asJson(DeliveryAcceptedSchema), '200 = DeliveryAcceptedSchema')
  t.same(operation.responses['4XX'].content['application/json'].schema, asJson(ErrorSchema), '4xx = ErrorSchema')
  t.same(operation.responses['5XX'].content['application/json'].schema, asJson(ErrorSchema), '5xx = ErrorSchema')
  const headers = operation.parameters.filter((parameter: { in: string }) => parameter.in === 'header')
  t.same(headers.map((parameter: { name: string }) => parameter.name).sort(), ['webhook-id', 'webhook-signature', 'webhook-timestamp'])
  t.ok(headers.every((parameter: { required: boolean, description?: string }) => parameter.required === false && parameter.description),
    'optional (development accepts unsigned requests) and explained')
})

t.test('the server points at port 3001, the service\'s, not 3000', async (t) => {
  t.same(document.servers.map((server: { url: string }) => server.url), ['http://localhost:3001'])
})
