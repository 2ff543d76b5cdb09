import type { ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { request } from 'undici'
import { sampleDelivery } from '../../scripts/deliveries.ts'
import { BOOK_COMPLETION_PATH } from '../../src/routes/book-completion.ts'
import type { CompletedDelivery } from '../../src/webhooks/payload.ts'
import type { RunningApp } from '../helper.ts'
import { runProcess, type ProcessRun } from './process.ts'

/**
 * Running the Python sender kit (clients/python) as the backend and an operator do: python3
 * processes, the library through a small driver, and a flaky proxy in front of the service.
 * Shared by test/sender-kit.test.ts and test/sender-kit-refusals.test.ts.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const KIT = 'clients/python/book_completion_webhook.py'
/** Backoff for tests that are not about its length: waits under 0.1 s instead of up to minutes. */
export const QUICK_BACKOFF = [0.05, 0.1]

// --- running the kit ---------------------------------------------------------------------------

export function kitEnv (extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONDONTWRITEBYTECODE: '1', PYTHONIOENCODING: 'utf-8', PYTHONUNBUFFERED: '1' }
  for (const name of ['WEBHOOK_URL', 'WEBHOOK_SECRET', 'WEBHOOK_SPOOL_DIR', 'WEBHOOK_MAX_BODY_BYTES', 'NODE_OPTIONS', 'http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY']) {
    delete env[name]
  }
  return { ...env, ...extra }
}

export function python (args: string[], options: { env?: Record<string, string>, stdin?: string | Buffer, started?: (child: ChildProcess) => void } = {}): Promise<ProcessRun> {
  return runProcess('python3', args, { cwd: ROOT, env: kitEnv(options.env), stdin: options.stdin, started: options.started })
    .catch((err: Error) => { throw new Error(`${err.message} (the kit's tests need python3)`) })
}

/** The command line, as an operator or cron runs it. */
export function cli (args: string[], env: Record<string, string> = {}, started?: (child: ChildProcess) => void): Promise<ProcessRun> {
  return python([KIT, ...args], { env, ...(started ? { started } : {}) })
}

/** The library, as the backend calls it: `send(payload, ...)`, `flush(...)`, `resend(...)`, `rejected()`, `drop(id)`; the outcome as JSON. */
const DRIVER = `
import json, logging, sys
sys.path.insert(0, "clients/python")
import book_completion_webhook as kit
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
options = json.loads(sys.argv[1])
action = options.pop("action")
if "backoff" in options:
    options["backoff"] = kit.Backoff(*options["backoff"])
def kept(one):
    return {"path": one.path, "webhook_id": one.webhook_id, "job_id": one.job_id, "body": one.body.decode("utf-8"), "url": one.url,
            "status": one.status, "answer": one.answer, "reason": one.reason, "rejected_at": one.rejected_at}
try:
    if action == "send":
        result = {"delivered": kit.send(json.loads(sys.stdin.buffer.read().decode("utf-8")), **options)}
    elif action == "resend":
        done = kit.resend(**options)
        result = {"resent": {"delivered": done.delivered, "rejected": done.rejected, "spooled": done.spooled, "responses": list(done.responses)}}
    elif action == "rejected":
        result = {"kept": [kept(one) for one in kit.rejected(**options)]}
    elif action == "drop":
        result = {"dropped": kept(kit.drop(**options))}
    else:
        done = kit.flush(**options)
        result = {"flushed": {"delivered": done.delivered, "rejected": done.rejected, "kept": done.kept, "responses": list(done.responses)}}
except kit.WebhookRejected as err:
    result = {"rejected": {"status": err.status, "body": err.body, "webhook_id": err.webhook_id, "message": str(err), "path": err.path}}
except kit.WebhookSpooled as err:
    result = {"spooled": {"path": err.path, "webhook_id": err.webhook_id, "last_error": err.last_error, "message": str(err)}}
except kit.UnknownDelivery as err:
    result = {"unknown": {"webhook_id": err.webhook_id, "message": str(err)}}
print(json.dumps(result, ensure_ascii=False))
`

export type Body = Record<string, unknown>
/** One delivery kept in rejected/, as rejected() returns it. */
export interface Kept { path: string, webhook_id: string, job_id: string | null, body: string, url: string, status: number, answer: unknown, reason: string, rejected_at: string }
export interface KitOutcome {
  delivered?: Body
  rejected?: { status: number, body: Body, webhook_id: string, message: string, path: string | null }
  spooled?: { path: string, webhook_id: string, last_error: string, message: string }
  flushed?: { delivered: number, rejected: number, kept: number, responses: Body[] }
  resent?: { delivered: number, rejected: number, spooled: number, responses: Body[] }
  kept?: Kept[]
  dropped?: Kept
  unknown?: { webhook_id: string, message: string }
  run: ProcessRun
}

export async function library (action: 'send' | 'flush' | 'resend' | 'rejected' | 'drop', options: Record<string, unknown>, payload?: unknown, env: Record<string, string> = {}): Promise<KitOutcome> {
  const run = await python(['-c', DRIVER, JSON.stringify({ action, ...options })], { env, stdin: payload === undefined ? '' : JSON.stringify(payload) })
  if (run.code !== 0) throw new Error(`the kit failed (exit ${run.code}):\n${run.stderr}`)
  return { ...(JSON.parse(run.stdout) as Omit<KitOutcome, 'run'>), run }
}

/** The `attempt n/N <webhook-id>: ...` lines the kit printed. */
export function attemptLines (stderr: string): string[] {
  return stderr.split('\n').filter((line) => /^attempt \d+\/\d+ /.test(line))
}

// --- a flaky proxy in front of the service -------------------------------------------------------

export type Behaviour =
  | { answer: number, retryAfter?: () => string } // answered by the proxy itself
  | { drop: true } // the connection is closed after the request, with no answer
  | { hang: true } // the request is read and never answered
  | { forward: true, thenDown?: true } // passed to the service; thenDown: its answer is lost and the proxy goes down

/** `url` is the request target as sent: a path, or the absolute URL a client sends to a forward proxy. */
interface Seen { atMs: number, url: string, headers: IncomingHttpHeaders, body: Buffer }

/**
 * An HTTP proxy that answers a planned sequence of failures, then forwards to the service. It also
 * stands in for an outbound (forward) proxy: `seen` keeps each request's target, and a `CONNECT`
 * is recorded in `tunnels` with its headers and refused with 403 (it opens no tunnel).
 */
export class FlakyProxy {
  readonly seen: Seen[] = []
  readonly tunnels: { target: string, headers: IncomingHttpHeaders }[] = []
  private plan: Behaviour[] = []
  private server: Server | undefined
  private readonly sockets = new Set<Socket>()
  private port = 0

  constructor (private readonly upstream: string) {}

  get endpoint (): string { return `http://127.0.0.1:${this.port}${BOOK_COMPLETION_PATH}` }

  /** The next requests' fates, in order; later ones are forwarded. Clears what was seen. */
  expect (...behaviours: Behaviour[]): void {
    this.plan = behaviours
    this.seen.length = 0
  }

  async up (): Promise<void> {
    const server = createServer((req, res) => { this.handle(req, res).catch(() => res.destroy()) })
    server.on('connection', (socket) => {
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    })
    server.on('connect', (req: IncomingMessage, socket: Socket) => {
      this.tunnels.push({ target: req.url ?? '', headers: req.headers })
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')
    })
    server.listen(this.port, '127.0.0.1')
    await once(server, 'listening')
    this.port = (server.address() as { port: number }).port
    this.server = server
  }

  /** Nothing listens any more: connections are refused. */
  async down (): Promise<void> {
    const server = this.server
    this.server = undefined
    for (const socket of this.sockets) socket.destroy()
    if (server?.listening) await new Promise((resolve) => server.close(resolve))
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const body = Buffer.concat(chunks)
    this.seen.push({ atMs: performance.now(), url: req.url ?? '', headers: req.headers, body })
    const behaviour = this.plan.shift() ?? { forward: true }
    if ('answer' in behaviour) {
      const headers: Record<string, string> = { 'content-type': 'application/json' }
      if (behaviour.retryAfter) headers['retry-after'] = behaviour.retryAfter()
      res.writeHead(behaviour.answer, headers).end(JSON.stringify({ error: `proxy_${behaviour.answer}` }))
    } else if ('drop' in behaviour) {
      req.socket.destroy()
    } else if ('forward' in behaviour) {
      const headers: Record<string, string> = {}
      for (const name of ['content-type', 'webhook-id', 'webhook-timestamp', 'webhook-signature']) {
        const value = req.headers[name]
        if (typeof value === 'string') headers[name] = value
      }
      const answer = await request(this.upstream, { method: 'POST', headers, body })
      const text = await answer.body.text()
      if (behaviour.thenDown) {
        await this.down()
        return
      }
      res.writeHead(answer.statusCode, { 'content-type': 'application/json' }).end(text)
    }
    // hang: never answered; the client's timeout closes it
  }
}

export async function startProxy (t: Test, upstream: RunningApp): Promise<FlakyProxy> {
  const proxy = new FlakyProxy(upstream.endpoint)
  await proxy.up()
  t.teardown(() => proxy.down())
  return proxy
}

export async function tempDir (t: Test, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

export async function listing (dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort()
  } catch {
    return []
  }
}

export function book (userId: string, jobId = `kit-${randomUUID()}`): CompletedDelivery {
  return { ...sampleDelivery(), job_id: jobId, user_id: userId, environment: 'production' }
}
