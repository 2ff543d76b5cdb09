import { readFile } from 'node:fs/promises'
import { Ajv } from 'ajv'
import t from 'tap'
import { deliveryJsonSchema, deliveryJsonSchemaText, SCHEMA_FILE } from '../scripts/delivery-json-schema.ts'
import { DeliverySchema, validateDelivery } from '../src/webhooks/payload.ts'

/** docs/book-completion.schema.json: what a sender validates against before sending. */

const committedText = await readFile(SCHEMA_FILE, 'utf8')
const exported = JSON.parse(committedText)
const seed = JSON.parse(await readFile(new URL('./fixtures/contract-seed-delivery.json', import.meta.url), 'utf8'))
// Strict mode: a schema any strict validator accepts (unknown keywords, missing types are errors).
const validateExported = new Ajv({ allErrors: true, strict: true }).compile(exported)

type Payload = Record<string, unknown>
const withBook = (change: (book: Payload) => void): Payload => {
  const copy = structuredClone(seed)
  change(copy.book_data)
  return copy
}
const without = (field: string): Payload => {
  const copy = structuredClone(seed)
  delete copy[field]
  return copy
}
const failed = { job_id: 'job-1', status: 'failed', timestamp: '2025-10-20T10:23:34.861Z', environment: 'production' }

/** The route's verdict without HTTP: the one validation of a delivery, as the route runs it. */
function serviceAccepts (payload: Payload): boolean {
  try {
    validateDelivery(payload)
    return true
  } catch {
    return false
  }
}

t.test('the committed file is what `npm run schema:export` writes from DeliverySchema', async (t) => {
  t.equal(committedText, deliveryJsonSchemaText(), 'out of date: run `npm run schema:export` and commit docs/book-completion.schema.json')
  t.same(exported.properties, JSON.parse(JSON.stringify(DeliverySchema.properties)), 'its properties are the route\'s schema')
  t.same(deliveryJsonSchema().required, ['job_id', 'status', 'timestamp', 'environment'])
  t.equal(exported.$schema, 'http://json-schema.org/draft-07/schema#')
})

t.test('the contract\'s seed payload (section 3) validates', async (t) => {
  t.ok(validateExported(seed), JSON.stringify(validateExported.errors))
  t.ok(serviceAccepts(seed), 'and the service accepts it')
})

t.test('a payload without job_id is rejected, naming job_id', async (t) => {
  t.notOk(validateExported(without('job_id')))
  t.match(validateExported.errors, [{ keyword: 'required', params: { missingProperty: 'job_id' } }])
})

t.test('the exported schema and the service agree on each payload', async (t) => {
  const cases: Array<[string, Payload]> = [
    ['the seed', seed],
    ['no user_id (older senders)', without('user_id')],
    ['an unknown extra field', { ...seed, trace_id: 'abc' }],
    ['generated_at without a zone (Python isoformat)', withBook((book) => { book.generated_at = '2025-10-20T10:23:34' })],
    ['failed with an error', { ...failed, error: 'LLM quota exceeded' }],
    ['failed with error null', { ...failed, error: null }],
    ['failed with an empty error', { ...failed, error: '' }],
    ['failed without error', failed],
    ['completed without book_data', without('book_data')],
    ['completed with no chapter', withBook((book) => { book.chapters = [] })],
    ['a chapter without content', withBook((book) => { delete (book.chapters as Payload[])[0]!.content })],
    ['an unknown status', { ...seed, status: 'done' }],
    ['an empty job_id', { ...seed, job_id: '' }],
    ['a 256-character job_id', { ...seed, job_id: 'x'.repeat(256) }],
    ['a negative word_count', withBook((book) => { book.word_count = -1 })],
    ['a word_count as a string', withBook((book) => { book.word_count = '15000' })],
    ['a timestamp that is not a date', { ...seed, timestamp: 'yesterday' }],
    ['an empty book_title', withBook((book) => { book.book_title = '' })],
  ]
  for (const [name, payload] of cases) {
    const service = serviceAccepts(payload)
    t.equal(validateExported(payload), service, `${name}: ${service ? 'accepted' : 'rejected'} by both`)
  }
  t.equal(cases.filter(([, payload]) => serviceAccepts(payload)).length, 5, 'five of them are valid')
})

t.test('two checks stay server-only (documented): calendar dates and text Postgres cannot store', async (t) => {
  const february30 = withBook((book) => { book.generated_at = '2025-02-30T10:00:00Z' })
  const nul = withBook((book) => { (book.chapters as Payload[])[0]!.content = 'a\u0000b' })
  for (const payload of [february30, nul]) {
    t.ok(validateExported(payload), 'the exported schema lets it through')
    t.notOk(serviceAccepts(payload), 'the service answers 400')
  }
})
