import type { Socket } from 'node:net'
import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'

/**
 * Contract section 2, refused uploads. An answer with `Connection: close` given before the body
 * was read (a 413, a 503 of load shedding or shutdown) reaches a sender that writes its whole body
 * before reading (Python's http.client) only if the socket is not closed under it: closing a
 * socket that still receives makes the kernel send RST, which discards the answer waiting in the
 * sender's receive buffer (it sees EPIPE or ECONNRESET instead). So the answer is sent at once,
 * the socket's write side is ended (FIN), and the rest of the body is read and thrown away until
 * it ends; then the socket closes. Past a bound it closes at once, as before.
 */

/** Bytes of a refused body read and discarded at most, in BODY_LIMIT_BYTES (20 MiB by default). */
export const DRAIN_MAX_BODY_LIMITS = 2
/**
 * Time a refused upload gets to finish sending after its answer. Within the shutdown grace (10 s),
 * so a 503 given while closing does not hold the exit. Node's request timeout applies as well.
 */
export const DRAIN_MAX_MS = 5_000
/** Refused uploads drained at once; past it a refused upload's connection closes with its answer. */
export const MAX_CONCURRENT_DRAINS = 32

export default fp<{ bodyLimitBytes: number }>(async (app, { bodyLimitBytes }) => {
  const maxDrainBytes = DRAIN_MAX_BODY_LIMITS * bodyLimitBytes
  let draining = 0

  app.addHook('onSend', async (request, reply) => {
    if (String(reply.getHeader('connection')).toLowerCase() !== 'close' || !bodyStillComing(request)) return
    const declared = Number(request.headers['content-length'])
    if (declared > maxDrainBytes || draining >= MAX_CONCURRENT_DRAINS) {
      request.log.info({ declaredBytes: Number.isFinite(declared) ? declared : undefined, draining }, 'refused upload: closing without reading the rest')
      return
    }
    draining++
    drain(request, maxDrainBytes, () => { draining-- })
  })
}, { name: 'refused-uploads' })

function bodyStillComing (request: FastifyRequest): boolean {
  const body = request.raw
  const hasBody = request.headers['transfer-encoding'] !== undefined || Number(request.headers['content-length']) > 0
  return hasBody && !body.complete && !body.destroyed && !request.raw.socket.destroyed
}

/**
 * Node ends a `Connection: close` socket with `destroySoon()` once the answer is written (end,
 * then destroy on 'finish'). For this socket it only ends the write side; the socket is destroyed
 * when the body has ended, or the bound is passed, whichever comes first.
 */
function drain (request: FastifyRequest, maxBytes: number, release: () => void): void {
  const body = request.raw
  const socket = body.socket as Socket
  let answered = false
  let discarded = 0
  let settled = false

  const settle = (reason: 'ended' | 'bytes' | 'time' | 'closed') => {
    if (settled) return
    settled = true
    clearTimeout(timer)
    body.off('data', discard)
    body.off('end', ended)
    socket.off('close', closed)
    // Back to Node's own destroySoon: an answer not written yet ends the socket as usual.
    Reflect.deleteProperty(socket, 'destroySoon')
    release()
    if (reason === 'bytes' || reason === 'time') {
      request.log.info({ discardedBytes: discarded, bound: reason }, 'refused upload: closing past the drain bound')
      socket.destroy()
    } else if (answered) {
      socket.destroySoon()
    }
  }
  const discard = (chunk: Buffer) => {
    discarded += chunk.length
    if (discarded > maxBytes) settle('bytes')
  }
  const ended = () => settle('ended')
  const closed = () => settle('closed')
  const timer = setTimeout(() => settle('time'), DRAIN_MAX_MS)

  socket.destroySoon = () => {
    answered = true
    socket.end()
  }
  body.on('data', discard)
  body.once('end', ended)
  socket.once('close', closed)
  body.resume()
}
