import { createHmac, randomBytes, randomUUID } from 'node:crypto'
import { Writable } from 'node:stream'
import { sql, type SQL } from 'drizzle-orm'
import pg from 'pg'
import pino from 'pino'
import { Webhook } from 'standardwebhooks'
import { request, type Dispatcher } from 'undici'
import { buildApp } from '../src/app.ts'
import { loadConfig, type Config } from '../src/config.ts'
import { openDatabase, type DatabaseHandle } from '../src/db/client.ts'
import { migratePostgres } from '../src/db/migrations.ts'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { createDatabase, TEST_DATABASE_URL } from './support/postgres.ts'

import type { Test } from 'tap'

/** A Standard Webhooks secret as senders are given it: `whsec_` + base64 of 32 random bytes. */
export const TEST_SECRET = `whsec_${randomBytes(32).toString('base64')}`

export { TEST_DATABASE_URL }

let serverAnswers: Promise<boolean> | undefined

/** Whether the Postgres server at TEST_DATABASE_URL answers; else tests run on embedded PGlite. */
export function postgresAvailable (): Promise<boolean> {
  serverAnswers ??= (async () => {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 2000 })
    try {
      await client.connect()
      await client.end()
      return true
    } catch {
      return false
    }
  })()
  return serverAnswers
}

/** For tests that need several connections or a server to lose: skipped on the embedded database. */
export async function requiresPostgres (t: Test, what: string): Promise<boolean> {
  if (await postgresAvailable()) return true
  t.test(what, { skip: 'needs the Postgres server at TEST_DATABASE_URL (none answered; ran on embedded PGlite)' }, () => {})
  return false
}

/** Embedded databases standing in for a server, by the pseudo-URL freshDatabase gave out. */
const embeddedDatabases = new Map<string, DatabaseHandle>()
const EMBEDDED_SCHEME = 'embedded:'

/**
 * A fresh, migrated database for this test file, dropped at its end, by URL. Where no server
 * answers, an in-memory PGlite shared by every app of the file, named by an `embedded:` URL
 * that startApp recognises.
 */
export async function freshDatabase (t: Test): Promise<string | undefined> {
  if (!(await postgresAvailable())) {
    const name = `${EMBEDDED_SCHEME}${randomUUID()}`
    const handle = await openDatabase({ dataDir: 'memory://' }, pino({ level: 'silent' }))
    embeddedDatabases.set(name, handle)
    t.teardown(async () => {
      embeddedDatabases.delete(name)
      await handle.close()
    })
    return name
  }
  const { url, drop } = await createDatabase('bcw_test')
  t.teardown(drop)
  await migratePostgres(url)
  return url
}

/** A production config (signed requests required) on the given database, with overrides. */
export function testConfig (databaseUrl: string | undefined, overrides: Partial<Config> = {}, env: NodeJS.ProcessEnv = {}): Config {
  const config = loadConfig({
    ENVIRONMENT: 'development',
    WEBHOOK_SECRET: TEST_SECRET,
    LOG_LEVEL: 'info',
    ...env,
  })
  // An app built in the test process shares its event loop and heap with the test runner (and
  // with what the test generates): those are not the service's, so the pressure checks are off.
  // test/load-shedding.test.ts turns them on; the server processes tests spawn have them all.
  const loadShedding = { ...config.loadShedding, maxEventLoopDelayMs: 0, maxHeapUsedBytes: 0, maxRssBytes: 0 }
  return { ...config, environment: 'production', databaseUrl, dataDir: 'memory://', loadShedding, ...overrides }
}

interface LogLine { level: number, msg: string, [key: string]: unknown }

export interface RunningApp {
  app: Awaited<ReturnType<typeof buildApp>>
  url: string
  endpoint: string
  logs: LogLine[]
  /** Every captured log line, raw, to search for what must never be logged. */
  rawLogs: () => string
  query: <T = Record<string, unknown>>(query: SQL) => Promise<T[]>
}

/** Builds the real app, listens on a free loopback port, closes it when the test ends. */
export async function startApp (t: Test, config: Config): Promise<RunningApp> {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk, _encoding, callback) {
      lines.push(...String(chunk).split('\n').filter(Boolean))
      callback()
    },
  })
  const logger = pino({ level: config.logLevel }, stream)
  const embedded = config.databaseUrl?.startsWith(EMBEDDED_SCHEME) ? embeddedDatabases.get(config.databaseUrl) : undefined
  const app = await buildApp(embedded ? { ...config, databaseUrl: undefined } : config, embedded ? { logger, database: embedded } : { logger })
  t.teardown(() => app.close())
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    app,
    url: address,
    endpoint: `${address}${BOOK_COMPLETION_PATH}`,
    get logs () { return lines.map((line) => JSON.parse(line) as LogLine) },
    rawLogs: () => lines.join('\n'),
    query: <T>(query: SQL) => app.db.rows<T>(query),
  }
}

// --- deliveries, as a sender makes them: two signers on purpose, one poster ---

export interface Signing {
  /** Any form WEBHOOK_SECRET takes (default TEST_SECRET). */
  secret?: string
  /** The webhook-id (default `msg_<uuid>`) and the moment of webhook-timestamp (default now). */
  id?: string
  at?: Date
}

/** The official `standardwebhooks` package for a secret: `whsec_<base64>` decoded, any other as its UTF-8 bytes. */
export function standardWebhook (secret = TEST_SECRET): Webhook {
  return secret.startsWith('whsec_') ? new Webhook(secret) : new Webhook(Buffer.from(secret, 'utf8'), { format: 'raw' })
}

/**
 * Standard Webhooks headers signed by the official `standardwebhooks` package, as a sender's would
 * be: for a string as it is, for an object as `deliver` sends it (JSON-encoded).
 */
export function signedHeaders (payload: unknown, options: Signing = {}): Record<string, string> {
  const id = options.id ?? `msg_${randomUUID()}`
  const at = options.at ?? new Date()
  return headersOf(id, at, standardWebhook(options.secret).sign(id, at, typeof payload === 'string' ? payload : JSON.stringify(payload)))
}

/**
 * The same headers signed with plain node:crypto over the exact bytes (the package reads a body
 * as text, so invalid UTF-8 needs this): the independent cross-check of the package and of the
 * service. `key` replaces the secret's key, as a sender who decodes the secret wrongly does.
 */
export function signedBytesHeaders (body: string | Buffer, options: Signing & { key?: Buffer } = {}): Record<string, string> {
  const id = options.id ?? `msg_${randomUUID()}`
  const at = options.at ?? new Date()
  const key = options.key ?? keyOf(options.secret ?? TEST_SECRET)
  const digest = createHmac('sha256', key).update(`${id}.${unixSeconds(at)}.`).update(body).digest('base64')
  return headersOf(id, at, `v1,${digest}`)
}

/** Contract section 1, written here again on purpose: a check of the service's own reading of the secret. */
function keyOf (secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8')
}

const unixSeconds = (at: Date) => Math.floor(at.getTime() / 1000)

function headersOf (id: string, at: Date, signature: string): Record<string, string> {
  return { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(unixSeconds(at)), 'webhook-signature': signature }
}

export interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Record<string, unknown>
  text: string
  /** The webhook-id and webhook-signature the request carried, if any. */
  webhookId?: string | undefined
  signature?: string | undefined
}

/**
 * POSTs a delivery over real HTTP, as a sender does: an object is JSON-encoded, a string or a
 * Buffer sent as it is. Without `headers` it is signed (a string or an object by the
 * `standardwebhooks` package, a Buffer over its exact bytes by node:crypto); `headers` are sent
 * exactly as given. `dispatcher`: the sender's own HTTP agent (keep-alive sockets).
 */
export async function deliver (endpoint: string, payload: unknown, headers?: Record<string, string>, dispatcher?: Dispatcher): Promise<Answer> {
  const body = typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload)
  const sent = headers ?? (typeof body === 'string' ? signedHeaders(body) : signedBytesHeaders(body))
  const response = await request(endpoint, { method: 'POST', body, headers: sent, ...(dispatcher ? { dispatcher } : {}) })
  const text = await response.body.text()
  let parsed: Record<string, unknown> = {}
  try { parsed = JSON.parse(text) } catch {}
  return { status: response.statusCode, headers: response.headers, body: parsed, text, webhookId: sent['webhook-id'], signature: sent['webhook-signature'] }
}

/** A GET over real HTTP: the status, the headers, the body as text, and how long the answer took. */
export async function get (url: string): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, text: string, ms: number }> {
  const started = performance.now()
  const response = await request(url)
  const text = await response.body.text()
  return { status: response.statusCode, headers: response.headers, text, ms: performance.now() - started }
}

/** Polls `probe` until it gives a value (not undefined), or gives undefined after `timeoutMs`. */
export async function waitFor<T> (probe: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 25): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const value = await probe()
    if (value !== undefined) return value
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
  return undefined
}

// --- the database, as the tests look at it ---

export async function count (running: RunningApp, table: string, where: SQL = sql`true`): Promise<number> {
  const [row] = await running.query<{ n: number }>(sql`SELECT count(*)::int AS n FROM ${sql.identifier(table)} WHERE ${where}`)
  return row?.n ?? 0
}

export async function createUser (running: RunningApp, id: string, createdAt?: string): Promise<void> {
  await running.query(sql`INSERT INTO users (id, created_at) VALUES (${id}, coalesce(${createdAt ?? null}::timestamptz, now()))`)
}

/** Row counts of every table: "nothing was written" is this unchanged. */
export async function snapshot (running: RunningApp): Promise<Record<string, number>> {
  const tables = ['users', 'book_jobs', 'books', 'chapters', 'webhook_dead_letters']
  const counts = await Promise.all(tables.map((table) => count(running, table)))
  return Object.fromEntries(tables.map((table, i) => [table, counts[i]!]))
}
