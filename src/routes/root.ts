import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { API_DOCS_PATH } from '../plugins/api-docs.ts'
import { OPENAPI_PATH } from '../plugins/openapi.ts'
import { BOOK_COMPLETION_PATH } from './book-completion.ts'

const IndexSchema = Type.Object({
  service: Type.String(),
  endpoint: Type.String(),
  links: Type.Object({
    docs: Type.Optional(Type.String()),
    openapi: Type.String(),
    health: Type.String(),
    ready: Type.String(),
  }),
})

/** `GET /`: where to go from here, for someone who opens the service's address in a browser. */
const rootRoutes: FastifyPluginAsyncTypebox<{ apiDocs: boolean }> = async (app, { apiDocs }) => {
  const index = {
    service: 'book-completion webhook',
    endpoint: `POST ${BOOK_COMPLETION_PATH}`,
    links: {
      ...(apiDocs ? { docs: API_DOCS_PATH } : {}),
      openapi: OPENAPI_PATH,
      health: '/health',
      ready: '/ready',
    },
  }
  app.get('/', { schema: { hide: true, response: { 200: IndexSchema } } }, async () => index)
}

export default rootRoutes
