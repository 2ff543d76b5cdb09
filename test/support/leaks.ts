import { createHmac, randomUUID } from 'node:crypto'
import { request } from 'undici'
import { secretToKey } from '../../src/config.ts'
import { TEST_SECRET, type Answer } from '../helper.ts'

/** What must never appear in a response body (or a log line): each names why. */
const LEAK_PATTERNS: Array<[string, RegExp]> = [
  ['stack frame', /\bat [^\n]*:\d+:\d+\)?/],
  ['internal path', /node_modules|\/work\/|\bsrc\/|\.ts\b|file:\/\//],
  ['SQL', /\b(select\s.+\sfrom|insert\s+into|update\s+\w+\s+set|delete\s+from|on\s+conflict)\b/i],
  ['query error', /Failed query|DrizzleQueryError|violates|relation "/i],
]

/** The secret in every form it exists in the process. */
export const SECRET_FORMS = [TEST_SECRET, TEST_SECRET.slice('whsec_'.length), secretToKey(TEST_SECRET).toString('hex')]

/** Why `text` leaks something, or undefined. `extra` are literal values that must not appear. */
export function findLeak (text: string, extra: readonly string[] = []): string | undefined {
  for (const [name, pattern] of LEAK_PATTERNS) if (pattern.test(text)) return name
  for (const secret of SECRET_FORMS) if (text.includes(secret)) return 'secret'
  for (const value of extra) if (value.length > 0 && text.includes(value)) return `literal ${JSON.stringify(value.slice(0, 40))}`
  return undefined
}

export interface RawDelivery {
  id?: string
  /** Unix seconds of webhook-timestamp. */
  at?: number
  key?: Buffer
  headers?: Record<string, string>
  omitSignature?: boolean
  /** Sign `body` but send these bytes (a body changed in transit). */
  sendInstead?: Buffer
}

/** HMAC-SHA256 over the exact bytes, computed here (not by the code under test). */
export function signBytes (key: Buffer, id: string, at: number, body: Buffer): string {
  return `v1,${createHmac('sha256', key).update(`${id}.${at}.`).update(body).digest('base64')}`
}

/** POSTs exact bytes (string or Buffer), signed over those bytes. Returns the answer and the signature sent. */
export async function deliverBytes (endpoint: string, body: string | Buffer, options: RawDelivery = {}): Promise<Answer & { signature: string, id: string }> {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8')
  const id = options.id ?? `msg_${randomUUID()}`
  const at = options.at ?? Math.floor(Date.now() / 1000)
  const signature = signBytes(options.key ?? secretToKey(TEST_SECRET), id, at, bytes)
  const response = await request(endpoint, {
    method: 'POST',
    body: options.sendInstead ?? bytes,
    headers: {
      'content-type': 'application/json',
      'webhook-id': id,
      'webhook-timestamp': String(at),
      ...(options.omitSignature ? {} : { 'webhook-signature': signature }),
      ...options.headers,
    },
  })
  const text = await response.body.text()
  let parsed: Record<string, unknown> = {}
  try { parsed = JSON.parse(text) } catch {}
  return { status: response.statusCode, headers: response.headers, body: parsed, text, signature, id }
}
