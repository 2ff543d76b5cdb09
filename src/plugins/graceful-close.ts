import fp from 'fastify-plugin'

/**
 * Lets in-flight deliveries finish on SIGTERM without holding the close open. Node's
 * `server.close()` only ends keep-alive sockets that are idle when it is called: a socket whose
 * delivery is still in flight would then stay open for the keep-alive timeout (72 s), past the
 * grace period. While closing, every response says `connection: close`, so each such socket
 * ends with its response.
 */
export default fp(async (app) => {
  let closing = false
  app.addHook('preClose', async () => {
    closing = true
  })
  app.addHook('onSend', async (_request, reply) => {
    if (closing) reply.header('connection', 'close')
  })
}, { name: 'graceful-close' })
