import { createHmac, timingSafeEqual } from 'node:crypto'

/**
 * Standard Webhooks verification (spec 1.0, HMAC-SHA256 "v1" signatures) over the raw body.
 * No framework here: the route hands in the headers, the bytes and the clock.
 */

const SIGNATURE_HEADERS = ['webhook-id', 'webhook-timestamp', 'webhook-signature'] as const

/** Why a request fails verification (the 401 log line's `reason`, and a label of the metrics). */
export const SIGNATURE_FAILURES = [
  'missing_headers',
  'invalid_timestamp',
  'timestamp_too_old',
  'timestamp_too_new',
  'no_matching_signature',
] as const
export type SignatureFailure = typeof SIGNATURE_FAILURES[number]

export class SignatureError extends Error {
  constructor (readonly reason: SignatureFailure, message: string) {
    super(message)
    this.name = 'SignatureError'
  }
}

interface VerifyOptions {
  keys: readonly Buffer[]
  toleranceSeconds: number
  nowSeconds: number
}

type HeaderValue = string | string[] | undefined

/** True when the request carries any of the three Standard Webhooks headers. */
export function hasSignatureHeaders (headers: Record<string, HeaderValue>): boolean {
  return SIGNATURE_HEADERS.some((name) => headers[name] !== undefined)
}

function single (value: HeaderValue): string | undefined {
  // A repeated header arrives as an array: it is not a valid Standard Webhooks request.
  return typeof value === 'string' && value.length > 0 ? value : undefined
}

/** Throws SignatureError unless one `v1,` entry matches one key and the timestamp is in tolerance. */
export function verifySignature (headers: Record<string, HeaderValue>, body: Buffer, options: VerifyOptions): void {
  const id = single(headers['webhook-id'])
  const timestamp = single(headers['webhook-timestamp'])
  const signatureHeader = single(headers['webhook-signature'])
  if (!id || !timestamp || !signatureHeader) {
    throw new SignatureError('missing_headers', 'webhook-id, webhook-timestamp and webhook-signature are required')
  }

  if (!/^\d{1,12}$/.test(timestamp)) {
    throw new SignatureError('invalid_timestamp', 'webhook-timestamp must be Unix seconds')
  }
  const age = options.nowSeconds - Number(timestamp)
  if (age > options.toleranceSeconds) {
    throw new SignatureError('timestamp_too_old', 'webhook-timestamp is too old')
  }
  if (age < -options.toleranceSeconds) {
    throw new SignatureError('timestamp_too_new', 'webhook-timestamp is too far in the future')
  }

  const candidates: Buffer[] = []
  for (const entry of signatureHeader.split(' ')) {
    const comma = entry.indexOf(',')
    if (comma === -1 || entry.slice(0, comma) !== 'v1') continue
    candidates.push(Buffer.from(entry.slice(comma + 1), 'base64'))
  }

  const prefix = Buffer.from(`${id}.${timestamp}.`, 'utf8')
  for (const key of options.keys) {
    const expected = createHmac('sha256', key).update(prefix).update(body).digest()
    for (const candidate of candidates) {
      if (candidate.length === expected.length && timingSafeEqual(candidate, expected)) return
    }
  }
  throw new SignatureError('no_matching_signature', 'no signature matches')
}

/** What a sender produces: `v1,<base64>` for one key. Used by tests, the CLI and the benchmark. */
export function sign (key: Buffer, id: string, timestampSeconds: number, body: string | Buffer): string {
  const digest = createHmac('sha256', key).update(`${id}.${timestampSeconds}.`).update(body).digest('base64')
  return `v1,${digest}`
}
