import fp from 'fastify-plugin'
import { answerUnavailable, SHUTTING_DOWN } from '../unavailable.ts'

/**
 * How long in-flight deliveries get to finish after SIGTERM/SIGINT (src/server.ts). Here, not in
 * server.ts, so that what must wait longer (compose's stop_grace_period, Kubernetes'
 * terminationGracePeriodSeconds) is checked against it without starting a server.
 */
export const SHUTDOWN_GRACE_MS = 10_000

/**
 * Lets in-flight deliveries finish on SIGTERM without holding the close open. Node's
 * `server.close()` only ends keep-alive sockets that are idle when it is called: a socket whose
 * delivery is still in flight would then stay open for the keep-alive timeout (72 s), past the
 * grace period. While closing, every response says `connection: close`, so each such socket
 * ends with its response. A request that still arrives on an open socket (pipelined, or its
 * headers half sent when the close began) gets the contract's 503 (the app turns Fastify's own
 * bare one off with `return503OnClosing: false`).
 */
export default fp(async (app) => {
  let closing = false
  app.addHook('preClose', async () => {
    closing = true
  })
  app.addHook('onRequest', async (request, reply) => {
    if (!closing) return
    answerUnavailable(request, reply, SHUTTING_DOWN)
    return reply
  })
  app.addHook('onSend', async (_request, reply) => {
    if (closing) reply.header('connection', 'close')
  })
}, { name: 'graceful-close' })
