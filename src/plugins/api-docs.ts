import swaggerUi from '@fastify/swagger-ui'
import fp from 'fastify-plugin'
import { BOOK_COMPLETION_PATH } from '../routes/book-completion.ts'
import type { Delivery } from '../webhooks/payload.ts'

export const API_DOCS_PATH = '/docs'

/** The front end's own test request (contract section 8), dated `now`, as its curl builds it. */
function frontEndTestRequest (now = new Date()): Delivery {
  const at = now.toISOString().replace(/\.\d{3}Z$/, '.000Z')
  return {
    job_id: `test-auto-create-${Math.floor(now.getTime() / 1000)}`,
    status: 'completed',
    timestamp: at,
    environment: 'development',
    book_data: {
      book_title: 'Test Auto-Create Job',
      topic: 'Test',
      goal: 'Vérifier création auto',
      outline: [],
      chapters: [{ title: 'Chapitre 1', content: '# Chapitre 1\n\nTest', description: 'Test' }],
      generated_at: at,
      word_count: 100,
      chapter_count: 1,
    },
  }
}

/**
 * The document as the page shows it (`/openapi.json` itself is untouched): requests go to the
 * server the page was loaded from, and "Try it out" starts from the section 8 request, dated when
 * the page is loaded, which a development service answers with 200.
 */
function forThisPage (document: Record<string, any>): Record<string, any> {
  const requestBody = document.paths?.[BOOK_COMPLETION_PATH]?.post?.requestBody?.content?.['application/json']
  if (requestBody) requestBody.example = frontEndTestRequest()
  return { ...document, servers: [{ url: '/', description: 'the server this page was loaded from' }] }
}

/**
 * `GET /docs`: Swagger UI for the OpenAPI document (@fastify/swagger-ui serves its own copy of the
 * document at /docs/json, which the page reads). Its scripts and styles are files under
 * /docs/static, so helmet's CSP (`'self'`) lets the page run without inline scripts.
 */
export default fp(async (app) => {
  await app.register(swaggerUi, {
    routePrefix: API_DOCS_PATH,
    theme: { title: 'book-completion webhook: API' },
    transformSpecification: forThisPage,
  })
}, { name: 'api-docs', dependencies: ['openapi'] })
