import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { Agent, request } from 'undici'
import { ConfigError, MIN_SECRET_BYTES, secretToKey } from '../src/config.ts'
import type { Delivery } from '../src/webhooks/payload.ts'
import { sign } from '../src/webhooks/signature.ts'
import { frontEndTestRequest, sampleDelivery } from './deliveries.ts'

/**
 * `npm run send -- [options]`: sends one delivery to a running service, like the Python backend
 * does (Standard Webhooks signature over the exact bytes sent), and prints status, body and
 * round-trip time. Exit code: 0 when every answer is 2xx, 1 otherwise, 2 for a usage error.
 */

const SERVICE_PORT = 3001
const DEFAULT_URL = `http://localhost:${SERVICE_PORT}/api/webhooks/book-completion`
/** The web front end's port: where the original incident sent the webhook. */
const FRONT_END_PORT = '3000'

const USAGE = `Usage: npm run send -- [options]

Sends a book-completion delivery to a running service and prints the answer.

Payload (one of; default --test):
  --test               the front end's own test request (docs/API.md; no user_id)
  --sample             a realistic French book (5 chapters, Markdown, accents, emoji)
  --file PATH          a JSON payload from a file (sent byte for byte unless an option below changes it)
Changes to the payload:
  --job-id ID          set job_id
  --user-id ID         set user_id
  --status failed      send a failure (with --error "why"; book_data is dropped)
  --error TEXT         the failure's error message
Sending:
  --url URL            endpoint (default ${DEFAULT_URL})
  --secret SECRET      signing secret (default: $WEBHOOK_SECRET, which npm does not echo as it does this
                       command line); none: unsigned, accepted only by a service in development
  --repeat N           send N times with the same webhook-id, as a sender's retries do (default 1)
  --webhook-id ID      the delivery's webhook-id (default msg_<random uuid>)
  --timeout SECONDS    give up on an answer after this long (default 30)
  -h, --help           this text`

class UsageError extends Error {}

interface Options {
  url: URL
  keys: Buffer[]
  repeat: number
  webhookId: string
  timeoutMs: number
  body: Buffer
  summary: string
}

async function readOptions (argv: string[], env: NodeJS.ProcessEnv): Promise<Options | undefined> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      options: {
        url: { type: 'string', default: DEFAULT_URL },
        secret: { type: 'string' },
        file: { type: 'string' },
        sample: { type: 'boolean', default: false },
        test: { type: 'boolean', default: false },
        'job-id': { type: 'string' },
        'user-id': { type: 'string' },
        status: { type: 'string' },
        error: { type: 'string' },
        repeat: { type: 'string', default: '1' },
        'webhook-id': { type: 'string' },
        timeout: { type: 'string', default: '30' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  const values = parsed.values
  if (values.help) return undefined

  let url: URL
  try {
    url = new URL(values.url)
  } catch {
    throw new UsageError(`--url: not a URL: ${values.url}`)
  }
  const repeat = positiveInteger('--repeat', values.repeat)
  const timeoutMs = positiveInteger('--timeout', values.timeout) * 1000

  const sources = [values.file !== undefined, values.sample, values.test].filter(Boolean).length
  if (sources > 1) throw new UsageError('choose one of --file, --sample and --test')
  if (values.status !== undefined && values.status !== 'failed' && values.status !== 'completed') {
    throw new UsageError('--status: "completed" or "failed"')
  }
  if (values.status === 'failed' && !values.error) throw new UsageError('--status failed needs --error "why the job failed"')
  if (values.error !== undefined && values.status !== 'failed') throw new UsageError('--error goes with --status failed')

  const changes = { jobId: values['job-id'], userId: values['user-id'], failedWith: values.status === 'failed' ? values.error : undefined }
  const changed = changes.jobId !== undefined || changes.userId !== undefined || changes.failedWith !== undefined

  let body: Buffer
  let delivery: Delivery
  if (values.file !== undefined) {
    const bytes = await readPayloadFile(values.file)
    delivery = applyChanges(parseDelivery(values.file, bytes), changes)
    // Unchanged, the file's own bytes are sent and signed: what a sender's payload really is.
    body = changed ? Buffer.from(JSON.stringify(delivery)) : bytes
  } else {
    delivery = applyChanges(values.sample ? sampleDelivery() : frontEndTestRequest(), changes)
    body = Buffer.from(JSON.stringify(delivery))
  }

  const secrets = (values.secret ?? env.WEBHOOK_SECRET ?? '').split(/\s+/).filter(Boolean)
  let keys: Buffer[]
  try {
    keys = secrets.map(secretToKey)
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`--secret: ${err.message.replace(/^WEBHOOK_SECRET: /, '')}`)
    throw err
  }
  if (keys.some((key) => key.length < MIN_SECRET_BYTES)) {
    process.stderr.write(`warning: the secret is under ${MIN_SECRET_BYTES} bytes; the service refuses such a secret outside development\n`)
  }

  return {
    url,
    keys,
    repeat,
    webhookId: values['webhook-id'] ?? `msg_${randomUUID()}`,
    timeoutMs,
    body,
    summary: describe(delivery, body.length),
  }
}

function positiveInteger (option: string, value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new UsageError(`${option}: a whole number of at least 1 (got ${JSON.stringify(value)})`)
  return Number(value)
}

async function readPayloadFile (path: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (err) {
    throw new UsageError(`--file: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
}

function parseDelivery (path: string, bytes: Buffer): Delivery {
  try {
    return JSON.parse(bytes.toString('utf8')) as Delivery
  } catch (err) {
    throw new UsageError(`--file: ${path} is not JSON (${(err as Error).message})`)
  }
}

function applyChanges (delivery: Delivery, changes: { jobId?: string | undefined, userId?: string | undefined, failedWith?: string | undefined }): Delivery {
  const changed: Delivery = { ...delivery }
  if (changes.jobId !== undefined) changed.job_id = changes.jobId
  if (changes.userId !== undefined) changed.user_id = changes.userId
  if (changes.failedWith !== undefined) {
    changed.status = 'failed'
    changed.error = changes.failedWith
    delete changed.book_data
  }
  return changed
}

function describe (delivery: Delivery, bytes: number): string {
  const chapters = Array.isArray(delivery.book_data?.chapters) ? delivery.book_data.chapters.length : 0
  const parts = [
    `job_id ${String(delivery.job_id)}`,
    String(delivery.status),
    ...(delivery.status === 'completed' ? [`${chapters} chapter${chapters === 1 ? '' : 's'}`] : []),
    `user_id ${delivery.user_id === undefined ? '(none)' : String(delivery.user_id)}`,
    bytes < 1024 ? `${bytes} bytes` : `${(bytes / 1024).toFixed(1)} KB`,
  ]
  return parts.join(' · ')
}

/** Standard Webhooks headers for these exact bytes; one `v1,` entry per key (rotation). */
function signatureHeaders (keys: Buffer[], webhookId: string, body: Buffer): Record<string, string> {
  if (keys.length === 0) return {}
  const timestamp = Math.floor(Date.now() / 1000)
  return {
    'webhook-id': webhookId,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': keys.map((key) => sign(key, webhookId, timestamp, body)).join(' '),
  }
}

const UNREACHABLE: Record<string, string> = {
  ECONNREFUSED: 'connection refused: nothing listens there',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  ECONNRESET: 'the connection was reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
  UND_ERR_HEADERS_TIMEOUT: 'no answer in time',
  UND_ERR_BODY_TIMEOUT: 'the answer stopped in the middle',
  UND_ERR_SOCKET: 'the connection was closed before an answer',
}

/** The message for a request that got no HTTP answer: the URL, the cause, where the service really is. */
function unreachableMessage (url: URL, err: unknown): string {
  const code = (err as { code?: string }).code ?? ''
  const cause = UNREACHABLE[code] ?? (err as Error).message
  const lines = [`error: cannot reach ${url.href}: ${cause}${code ? ` (${code})` : ''}.`]
  if (url.port === FRONT_END_PORT) {
    lines.push(`Port ${FRONT_END_PORT} is the web front end's, not this service's: the webhook service listens on port ${SERVICE_PORT}.`)
  } else {
    lines.push(`Is the service running? Start it with \`npm run dev\`; it listens on port ${SERVICE_PORT} by default (PORT).`)
  }
  lines.push(`Try: npm run send -- --url ${DEFAULT_URL.replace('localhost', url.hostname || 'localhost')}`)
  return lines.join('\n')
}

/** One line of advice for an answer that is not 2xx. */
function hintFor (status: number, options: Options): string | undefined {
  switch (status) {
    case 401: return options.keys.length === 0
      ? 'hint: this service requires signed deliveries: pass --secret or set WEBHOOK_SECRET to the service\'s secret'
      : 'hint: the secret must be the service\'s WEBHOOK_SECRET as written (whsec_<base64>, or plain text used as UTF-8 bytes), and the clock right'
    case 404: return `hint: this is not the webhook endpoint; the service answers POST ${new URL(DEFAULT_URL).pathname} on port ${SERVICE_PORT} (${FRONT_END_PORT} is the web front end)`
    case 413: return 'hint: the body is over the service\'s BODY_LIMIT_BYTES'
    case 422: return 'hint: no user to own the job: pass --user-id of a row in users, or set DEFAULT_USER_ID on the service (the delivery was kept as a dead letter)'
    case 503: return 'hint: the database is unavailable; a sender retries after Retry-After with the same webhook-id'
    default: return undefined
  }
}

function printBody (text: string): void {
  try {
    process.stdout.write(`${JSON.stringify(JSON.parse(text), null, 2)}\n`)
  } catch {
    process.stdout.write(`${text.length > 2000 ? `${text.slice(0, 2000)}…` : text}\n`)
  }
}

async function send (options: Options): Promise<boolean> {
  const agent = new Agent({ connect: { timeout: options.timeoutMs } })
  const signing = options.keys.length === 0
    ? 'unsigned (no --secret nor WEBHOOK_SECRET: accepted only by a service in development)'
    : `signed with ${options.keys.length} key${options.keys.length === 1 ? '' : 's'} · webhook-id ${options.webhookId}`
  process.stdout.write(`POST ${options.url.href}\n  ${options.summary} · ${signing}\n`)

  let allAccepted = true
  try {
    for (let attempt = 1; attempt <= options.repeat; attempt++) {
      const started = performance.now()
      let response
      let text
      try {
        response = await request(options.url, {
          method: 'POST',
          dispatcher: agent,
          headers: { 'content-type': 'application/json', ...signatureHeaders(options.keys, options.webhookId, options.body) },
          body: options.body,
          headersTimeout: options.timeoutMs,
          bodyTimeout: options.timeoutMs,
        })
        text = await response.body.text()
      } catch (err) {
        process.stderr.write(`${unreachableMessage(options.url, err)}\n`)
        return false
      }
      const elapsedMs = performance.now() - started
      const retry = attempt > 1 ? ' (same webhook-id: a retry)' : ''
      const retryAfter = response.headers['retry-after'] ? ` · Retry-After ${String(response.headers['retry-after'])} s` : ''
      process.stdout.write(`[${attempt}/${options.repeat}] ${response.statusCode} · ${elapsedMs.toFixed(1)} ms round trip${retryAfter}${retry}\n`)
      printBody(text)
      if (response.statusCode < 200 || response.statusCode >= 300) {
        allAccepted = false
        const hint = hintFor(response.statusCode, options)
        if (hint) process.stdout.write(`${hint}\n`)
      }
    }
  } finally {
    await agent.close()
  }
  return allAccepted
}

async function main (): Promise<number> {
  let options
  try {
    options = await readOptions(process.argv.slice(2), process.env)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`error: ${err.message}\n\n${USAGE}\n`)
    return 2
  }
  if (!options) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  return (await send(options)) ? 0 : 1
}

process.exitCode = await main()
