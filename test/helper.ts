import { randomBytes, randomUUID } from 'node:crypto'
import { Writable } from 'node:stream'
import { sql, type SQL } from 'drizzle-orm'
import pg from 'pg'
import pino from 'pino'
import { Webhook } from 'standardwebhooks'
import { request } from 'undici'
import { buildApp } from '../src/app.ts'
import { loadConfig, secretToKey, type Config } from '../src/config.ts'
import { openDatabase, type DatabaseHandle } from '../src/db/client.ts'
import { migratePostgres } from '../src/db/migrations.ts'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { sign } from '../src/webhooks/signature.ts'

import type { Test } from 'tap'

/** A Standard Webhooks secret as senders are given it: `whsec_` + base64 of 32 random bytes. */
export const TEST_SECRET = `whsec_${randomBytes(32).toString('base64')}`

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

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

function databaseUrlFor (name: string): string {
  const url = new URL(TEST_DATABASE_URL)
  url.pathname = `/${name}`
  return url.toString()
}

async function adminQuery (text: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await client.connect()
  try {
    await client.query(text)
  } finally {
    await client.end()
  }
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
  const name = `bcw_test_${randomUUID().replaceAll('-', '')}`
  await adminQuery(`CREATE DATABASE ${name}`)
  t.teardown(() => adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  const url = databaseUrlFor(name)
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

export interface LogLine { level: number, msg: string, [key: string]: unknown }

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

/** Standard Webhooks headers made by the official `standardwebhooks` package, as a sender would. */
export function signedHeaders (body: string, options: { secret?: string, id?: string, at?: Date } = {}): Record<string, string> {
  const id = options.id ?? `msg_${randomUUID()}`
  const at = options.at ?? new Date()
  const signature = new Webhook(options.secret ?? TEST_SECRET).sign(id, at, body)
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': signature,
  }
}

/** Headers for exact bytes (invalid UTF-8 included), signed with node:crypto over those bytes. */
export function signedBytesHeaders (body: Buffer, secret = TEST_SECRET): Record<string, string> {
  const id = `msg_${randomUUID()}`
  const timestamp = Math.floor(Date.now() / 1000)
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': sign(secretToKey(secret), id, timestamp, body),
  }
}

export interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Record<string, unknown>
  text: string
}

/** POSTs a body (an object is JSON-encoded) over real HTTP; signs it unless `headers` are given. */
export async function deliver (endpoint: string, payload: unknown, headers?: Record<string, string>): Promise<Answer> {
  const body = typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload)
  const response = await request(endpoint, {
    method: 'POST',
    body,
    headers: headers ?? signedHeaders(typeof body === 'string' ? body : body.toString('utf8')),
  })
  const text = await response.body.text()
  let parsed: Record<string, unknown> = {}
  try { parsed = JSON.parse(text) } catch {}
  return { status: response.statusCode, headers: response.headers, body: parsed, text }
}

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
