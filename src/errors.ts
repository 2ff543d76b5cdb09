/** Errors a response is built from. One error handler (app.ts) maps them; nothing internal leaks. */

export class HttpError extends Error {
  constructor (readonly statusCode: number, readonly code: string, message: string, readonly headers: Record<string, string> = {}) {
    super(message)
    this.name = 'HttpError'
  }
}

/** A delivery that does not pass validation: a 400 naming the field. */
export class PayloadError extends HttpError {
  constructor (readonly field: string, message: string) {
    super(400, 'invalid_payload', `${field}: ${message}`)
    this.name = 'PayloadError'
  }
}

/** Seconds a sender is asked to wait when the database is away. */
export const RETRY_AFTER_SECONDS = 5

export function databaseUnavailable (): HttpError {
  return new HttpError(503, 'database_unavailable', 'the database is unavailable; retry later',
    { 'retry-after': String(RETRY_AFTER_SECONDS) })
}

/** SQLSTATE classes and codes for which a retry by the sender can help. */
const RETRYABLE_SQLSTATE = /^(08|53|57P0|57014|40001|40P01|55P03)/
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED'])
// node-postgres reports a lost or unobtainable connection with these messages and no code.
const POOL_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Cannot use a pool after calling end|connection timeout|Query read timeout/i

/**
 * Class 22 (data exception: NUL in text or jsonb, invalid encoding, a date or number out of range)
 * and 54001 (nesting too deep) come from the values the sender sent: a 400, never a 500.
 */
const UNSTORABLE_SQLSTATE = /^(22|54001)/

export type DatabaseFailure = 'unavailable' | 'unstorable' | 'other'

/**
 * Classifies an error thrown by a query. Drizzle wraps the driver's error (whose message holds the
 * SQL and every bound parameter) in `cause`: only codes are read here, never messages logged.
 */
export function classifyDatabaseError (err: unknown): { failure: DatabaseFailure, code: string | undefined } {
  for (let current: unknown = err, depth = 0; current && depth < 5; current = (current as { cause?: unknown }).cause, depth++) {
    const { code, message } = current as { code?: unknown, message?: unknown }
    if (typeof code === 'string') {
      if (UNSTORABLE_SQLSTATE.test(code)) return { failure: 'unstorable', code }
      if (NETWORK_CODES.has(code) || RETRYABLE_SQLSTATE.test(code)) return { failure: 'unavailable', code }
    }
    // A DrizzleQueryError's message is the SQL and its parameters (book text): never match on it.
    const wrapper = (current as { name?: unknown }).name === 'DrizzleQueryError'
    if (!wrapper && typeof message === 'string' && POOL_MESSAGES.test(message)) return { failure: 'unavailable', code: 'connection' }
  }
  for (let current: unknown = err, depth = 0; current && depth < 5; current = (current as { cause?: unknown }).cause, depth++) {
    const { code } = current as { code?: unknown }
    if (typeof code === 'string' && !code.startsWith('FST_')) return { failure: 'other', code }
  }
  return { failure: 'other', code: undefined }
}
