import swagger from '@fastify/swagger'
import fp from 'fastify-plugin'

export const OPENAPI_PATH = '/openapi.json'

/**
 * Publishes the routes' own schemas (the TypeBox schemas that validate and serialize) as an
 * OpenAPI 3.1 document at `GET /openapi.json`. Registered before the routes: @fastify/swagger
 * collects them from its `onRoute` hook. 3.1 keeps JSON Schema as is (`type: 'null'`, `const`),
 * so the document says exactly what the validator checks.
 */
export default fp(async (app) => {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'book-completion webhook',
        version: '1.0.0',
        description: 'Receives the book-completion webhook (Standard Webhooks, HMAC-SHA256) and stores the book in Postgres. ' +
          'Signing, retries and troubleshooting: docs/SENDER.md. The payload as a standalone JSON Schema: docs/book-completion.schema.json.',
      },
      servers: [{ url: 'http://localhost:3001', description: 'npm run dev (3000 is the web front end, not this service)' }],
      tags: [{ name: 'webhooks', description: 'Deliveries from the book-generation backend' }],
    },
    convertConstToEnum: false,
  })

  app.get(OPENAPI_PATH, { schema: { hide: true } }, async () => app.swagger())
}, { name: 'openapi' })
