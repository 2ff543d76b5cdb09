import { finished } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { RETRY_AFTER_SECONDS } from './errors.ts'

/** A 503 decided before the body is read (contract section 2: `error`, `message`, `Retry-After`). */
interface EarlyUnavailable {
  error: 'overloaded' | 'shutting_down'
  message: string
}

export const OVERLOADED: EarlyUnavailable = { error: 'overloaded', message: 'the service is overloaded; retry later' }
export const SHUTTING_DOWN: EarlyUnavailable = { error: 'shutting_down', message: 'the service is shutting down; retry later' }

/**
 * Answers 503 from an onRequest hook, before the body is parsed or kept: the rest of the upload is
 * read and thrown away first, then the answer goes out with `Connection: close`. Answering in the
 * middle of the upload would have Node close the socket under a sender that writes its whole body
 * before reading (Python's http.client), which then sees a broken pipe instead of the Retry-After.
 * Draining holds no memory; its time is bounded by the request timeout, its size by the body limit
 * (a declared or streamed body over it is answered at once).
 */
export function answerUnavailable (request: FastifyRequest, reply: FastifyReply, answer: EarlyUnavailable): Promise<void> {
  request.rejectionOutcome = answer.error
  const send = () => {
    reply.code(503).headers({ 'retry-after': String(RETRY_AFTER_SECONDS), connection: 'close' }).send(answer)
  }
  const body = request.raw
  const limit = request.routeOptions.bodyLimit ?? Infinity
  const declared = Number(request.headers['content-length'] ?? 0)
  if (body.complete || body.readableEnded || !(declared <= limit)) {
    send()
    return Promise.resolve()
  }
  return new Promise((resolve) => {
    let drained = 0
    const answerOnce = () => {
      body.off('data', count)
      if (!reply.sent) send()
      resolve()
    }
    const count = (chunk: Buffer) => {
      drained += chunk.length
      if (drained > limit) answerOnce()
    }
    body.on('data', count)
    finished(body, answerOnce)
  })
}
