import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { databaseUnavailable } from '../errors.ts'

/** A readiness probe must answer quickly even when the database hangs. */
const READY_TIMEOUT_MS = 2_000

const StatusSchema = Type.Object({ status: Type.String() })

/** Contract section 7: liveness without the database, readiness with it. */
const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/health', { schema: { response: { 200: StatusSchema } } }, async () => ({ status: 'ok' }))

  app.get('/ready', { schema: { response: { 200: StatusSchema } } }, async (request) => {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error('ready check timed out')), READY_TIMEOUT_MS)
    })
    try {
      await Promise.race([app.db.ping(), timeout])
    } catch {
      request.log.warn('readiness check failed: the database does not answer')
      throw databaseUnavailable()
    } finally {
      clearTimeout(timer)
    }
    return { status: 'ready' }
  })
}

export default healthRoutes
