import { PGlite } from '@electric-sql/pglite'
import { sql, type SQL } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite'
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres'
import pg from 'pg'
import type { FastifyBaseLogger as Logger } from 'fastify'
import { classifyDatabaseError } from '../errors.ts'
import { migrateEmbedded } from './migrations.ts'
import * as schema from './schema.ts'

/** Either driver: node-postgres in production, PGlite in development. Queries are the same. */
export type Database = PgDatabase<PgQueryResultHKT, typeof schema>

export interface DatabaseHandle {
  db: Database
  /** Current pool figures (postgres only), for metrics. */
  poolStats: () => { total: number, idle: number, waiting: number }
  close: () => Promise<void>
}

export interface DatabaseOptions {
  databaseUrl?: string | undefined
  dataDir: string
  poolMax?: number
  /** Overrides of DB_TIMEOUTS_MS (tests use short ones). */
  timeoutsMs?: Partial<Record<keyof typeof DB_TIMEOUTS_MS, number>>
}

/** The user the embedded development database starts with (contract section 4.1). */
export const DEV_USER_ID = 'dev-user'

export const DB_TIMEOUTS_MS = {
  connect: 3_000,
  statement: 15_000,
  idleInTransaction: 15_000,
  // Client-side bound for a query whose connection went silent (a network partition: no reset,
  // so the server-side timeouts above never reach us). Later than statement_timeout, so a slow
  // statement still ends with the server's own clean error first.
  query: 17_000,
} as const

export async function openDatabase (options: DatabaseOptions, log: Logger): Promise<DatabaseHandle> {
  if (options.databaseUrl) {
    return openPostgres(options.databaseUrl, options.poolMax ?? 10, { ...DB_TIMEOUTS_MS, ...options.timeoutsMs }, log)
  }
  return openEmbedded(options.dataDir, log)
}

function openPostgres (connectionString: string, max: number, timeouts: Record<keyof typeof DB_TIMEOUTS_MS, number>, log: Logger): DatabaseHandle {
  const pool = new pg.Pool({
    connectionString,
    max,
    connectionTimeoutMillis: timeouts.connect,
    statement_timeout: timeouts.statement,
    idle_in_transaction_session_timeout: timeouts.idleInTransaction,
    query_timeout: timeouts.query,
    application_name: 'book-completion-webhook',
  })
  // An idle client that loses its server emits here; without a listener the process would crash.
  pool.on('error', (err) => {
    log.warn({ code: (err as { code?: string }).code, err: { message: err.message } }, 'idle database connection lost')
  })
  // A checked-out client (between two statements of a transaction) that loses its server emits
  // on itself, where the pool does not listen: that too would crash the process. Its next query
  // fails ("not queryable") and the request answers 503.
  pool.on('connect', (client) => {
    client.on('error', (err) => {
      log.debug({ code: (err as { code?: string }).code }, 'database connection lost while checked out')
    })
  })
  const db = drizzlePg(pool, { schema })
  // drizzle-orm 0.45's pool transaction sends BEGIN before its try/finally: when BEGIN fails (the
  // database went away just after the connection was taken) the client is never released; after
  // `max` such failures the pool is exhausted for good and `pool.end()` never returns. So the
  // client is taken and released here, around drizzle's transaction on that one client. A client
  // whose connection failed or timed out is destroyed, never reused: after a client-side query
  // timeout the server's late answer would otherwise be read as the next query's.
  const transactionOnOwnClient: typeof db.transaction = async (transaction, config) => {
    const client = await pool.connect()
    let broken: Error | undefined
    try {
      return await drizzlePg(client, { schema }).transaction(transaction, config)
    } catch (err) {
      if (classifyDatabaseError(err).failure === 'unavailable') broken = err as Error
      throw err
    } finally {
      client.release(broken)
    }
  }
  db.transaction = transactionOnOwnClient
  return {
    db,
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    close: () => pool.end(),
  }
}

async function openEmbedded (dataDir: string, log: Logger): Promise<DatabaseHandle> {
  const client = await PGlite.create(dataDir)
  const db = drizzlePglite(client, { schema })
  await migrateEmbedded(db)
  await db.insert(schema.users).values({ id: DEV_USER_ID }).onConflictDoNothing()
  log.info({ dataDir }, 'embedded database ready (PGlite)')
  return {
    db,
    poolStats: () => ({ total: 1, idle: 1, waiting: 0 }),
    close: () => client.close(),
  }
}

/** The rows of a query: node-postgres and PGlite both answer `{ rows }`; the shared PgDatabase type does not say so. */
export async function queryRows<T> (db: Pick<Database, 'execute'>, query: SQL): Promise<T[]> {
  return (await db.execute(query) as unknown as { rows: T[] }).rows
}

export async function pingDatabase (db: Database): Promise<void> {
  await db.execute(sql`select 1`)
}
