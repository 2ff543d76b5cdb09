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
 * Answers 503 from an onRequest hook, before the body is parsed or kept, with `Connection: close`.
 * The rest of the upload is read and thrown away after the answer (src/plugins/refused-uploads.ts),
 * so a sender that writes its whole body before reading (Python's http.client) still reads the
 * Retry-After instead of a broken pipe.
 */
export function answerUnavailable (request: FastifyRequest, reply: FastifyReply, answer: EarlyUnavailable): void {
  request.rejectionOutcome = answer.error
  reply.code(503).headers({ 'retry-after': String(RETRY_AFTER_SECONDS), connection: 'close' }).send(answer)
}
