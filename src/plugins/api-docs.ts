import swaggerUi from '@fastify/swagger-ui'
import fp from 'fastify-plugin'
import { frontEndTestRequest } from '../front-end-test-request.ts'
import { BOOK_COMPLETION_PATH } from '../routes/book-completion.ts'

export const API_DOCS_PATH = '/docs'

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
