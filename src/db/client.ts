import { createHash } from 'node:crypto'
import type { Transaction as PGliteTransaction } from '@electric-sql/pglite'
import type { SQLWrapper } from 'drizzle-orm'
import { PgDialect } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres'
import pg from 'pg'
import type { FastifyBaseLogger as Logger } from 'fastify'
import { classifyDatabaseError } from '../errors.ts'
import * as schema from './schema.ts'
import { ConfigError } from '../config.ts'

/**
 * Statements are drizzle `sql` templates or query-builder objects, compiled by one dialect and sent
 * by the handle. The builder writes the plain statements; the delivery's CTEs (ON CONFLICT … WHERE,
 * VALUES lists, RETURNING xmax) are `sql`, which the builder cannot express.
 */
export interface Statements {
  /** `postgres`: a server other processes connect to; `embedded`: PGlite, this process only. */
  kind: 'postgres' | 'embedded'
  /** Runs one statement and returns its rows as Postgres names their columns. */
  rows: <T = Record<string, unknown>>(statement: SQLWrapper) => Promise<T[]>
  /** Runs `work` in a transaction (in a savepoint when already in one); commits when it resolves. */
  transaction: <T>(work: (tx: Transaction) => Promise<T>) => Promise<T>
}

export interface Transaction extends Statements {
  /**
   * This transaction changed nothing (it only locked and read): its commit need not wait for the
   * WAL flush, so a row lock it holds is not kept over an fsync.
   */
  commitWithoutFlush: () => void
}

export interface DatabaseHandle extends Statements {
  ping: () => Promise<void>
  /** Current pool figures, for metrics. */
  poolStats: () => { total: number, idle: number, waiting: number }
  close: () => Promise<void>
}

interface DatabaseOptions {
  databaseUrl?: string | undefined
  dataDir: string
  /** Named (server-side) prepared statements; off behind PgBouncer < 1.21 in transaction mode. */
  preparedStatements?: boolean
  poolMax?: number
  /** Overrides of DB_TIMEOUTS_MS (tests use short ones). */
  timeoutsMs?: Partial<Record<keyof typeof DB_TIMEOUTS_MS, number>>
}

/** The user the embedded development database starts with (contract section 4.1). */
export const DEV_USER_ID = 'dev-user'

const DB_TIMEOUTS_MS = {
  connect: 3_000,
  statement: 15_000,
  idleInTransaction: 15_000,
  // Client-side bound for a query whose connection went silent (a network partition: no reset,
  // so the server-side timeouts above never reach us). Later than statement_timeout, so a slow
  // statement still ends with the server's own clean error first.
  query: 17_000,
} as const

const dialect = new PgDialect()

/** Drizzle's query builder, with no connection of its own: what it builds is run with `rows`. */
export const queryBuilder = drizzlePg.mock({ schema })

interface CompiledStatement { text: string, values: unknown[] }

function compile (statement: SQLWrapper): CompiledStatement {
  const { sql: text, params } = dialect.sqlToQuery(statement.getSQL())
  return { text, values: params }
}

export async function openDatabase (options: DatabaseOptions, log: Logger): Promise<DatabaseHandle> {
  if (options.databaseUrl) {
    return openPostgres(options.databaseUrl, options, { ...DB_TIMEOUTS_MS, ...options.timeoutsMs }, log)
  }
  return openEmbedded(options.dataDir, log)
}

/**
 * Statement texts depend only on the chapter count, so a name per text lets Postgres parse and
 * plan each once per connection: that halves the server's CPU for a 10-chapter delivery. Past
 * this many distinct texts (unusual chapter counts) statements go unnamed rather than piling up
 * in every connection.
 */
const MAX_NAMED_STATEMENTS = 128

function statementNamer (): (text: string) => string | undefined {
  const names = new Map<string, string>()
  return (text) => {
    let name = names.get(text)
    if (name === undefined && names.size < MAX_NAMED_STATEMENTS) {
      name = `bcw_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`
      names.set(text, name)
    }
    return name
  }
}

/** How one connection sends statements: a node-postgres client, or PGlite (in a transaction). */
interface Connection {
  run: <T>(statement: SQLWrapper) => Promise<T[]>
  exec: (text: string) => Promise<unknown>
}

/** A transaction on one connection; `transaction` inside it is a savepoint. */
function transactionOn (kind: Statements['kind'], connection: Connection, depth: number, commitWithoutFlush: () => void): Transaction {
  return {
    kind,
    rows: connection.run,
    commitWithoutFlush,
    transaction: async (work) => {
      const savepoint = `bcw_savepoint_${depth}`
      await connection.exec(`SAVEPOINT ${savepoint}`)
      try {
        const result = await work(transactionOn(kind, connection, depth + 1, () => {}))
        await connection.exec(`RELEASE SAVEPOINT ${savepoint}`)
        return result
      } catch (err) {
        // On a lost connection this fails too; the enclosing transaction then discards the client.
        await connection.exec(`ROLLBACK TO SAVEPOINT ${savepoint}`).catch(() => {})
        throw err
      }
    },
  }
}

function openPostgres (connectionString: string, options: DatabaseOptions, timeouts: Record<keyof typeof DB_TIMEOUTS_MS, number>, log: Logger): DatabaseHandle {
  const pool = new pg.Pool({
    connectionString,
    max: options.poolMax ?? 10,
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

  const nameOf = options.preparedStatements === false ? () => undefined : statementNamer()
  const connection = (on: Pick<pg.ClientBase, 'query'>): Connection => ({
    run: async <T>(statement: SQLWrapper) => {
      const { text, values } = compile(statement)
      const name = nameOf(text)
      return (await on.query<T & pg.QueryResultRow>(name === undefined ? { text, values } : { name, text, values })).rows
    },
    exec: (text) => on.query(text),
  })

  // A client is taken and released here, around one statement or BEGIN … COMMIT. A client whose
  // connection failed or timed out is destroyed, never reused: after a client-side query timeout
  // the server's late answer would otherwise be read as the next query's. One whose statement
  // failed on the sender's data is kept (pool.query would destroy it and reconnect).
  const withClient = async <T>(use: (client: pg.PoolClient, discard: (err: Error) => void) => Promise<T>): Promise<T> => {
    const client = await pool.connect()
    let broken: Error | undefined
    try {
      return await use(client, (err) => { broken = err })
    } catch (err) {
      if (classifyDatabaseError(err).failure === 'unavailable') broken = err as Error
      throw err
    } finally {
      client.release(broken)
    }
  }

  const transaction = <T>(work: (tx: Transaction) => Promise<T>): Promise<T> => withClient(async (client, discard) => {
    await client.query('BEGIN')
    try {
      let flush = true
      const result = await work(transactionOn('postgres', connection(client), 1, () => { flush = false }))
      await client.query(flush ? 'COMMIT' : 'SET LOCAL synchronous_commit = off; COMMIT')
      return result
    } catch (err) {
      // A ROLLBACK that fails means a lost connection: the client is discarded, the first error kept.
      if (classifyDatabaseError(err).failure !== 'unavailable') await client.query('ROLLBACK').catch(discard)
      throw err
    }
  })

  return {
    kind: 'postgres',
    rows: (statement) => withClient((client) => connection(client).run(statement)),
    transaction,
    ping: async () => { await pool.query('SELECT 1') },
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    close: () => pool.end(),
  }
}

async function openEmbedded (dataDir: string, log: Logger): Promise<DatabaseHandle> {
  // Loaded only here: production and the operator commands never pay for the embedded database.
  // A development dependency: the image (npm ci --omit=dev) has none, and says so in one line.
  const [{ PGlite }, { drizzle: drizzlePglite }, { migrateEmbedded }] = await Promise.all([
    import('@electric-sql/pglite'), import('drizzle-orm/pglite'), import('./migrations.ts'),
  ]).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ERR_MODULE_NOT_FOUND') throw err
    throw new ConfigError('DATABASE_URL', 'is not set and the embedded database (PGlite, a development dependency) is not installed here: set DATABASE_URL')
  })
  const client = await PGlite.create(dataDir)
  await migrateEmbedded(drizzlePglite(client))

  const connection = (on: Pick<PGliteTransaction, 'query'>): Connection => ({
    run: async <T>(statement: SQLWrapper) => {
      const { text, values } = compile(statement)
      return (await on.query<T>(text, values)).rows
    },
    exec: (text) => on.query(text),
  })
  const handle: DatabaseHandle = {
    kind: 'embedded',
    rows: connection(client).run,
    // One process holds the embedded database and no other waits on its fsync: commitWithoutFlush
    // changes nothing here.
    transaction: (work) => client.transaction((tx) => work(transactionOn('embedded', connection(tx), 1, () => {}))),
    ping: async () => { await client.query('SELECT 1') },
    poolStats: () => ({ total: 1, idle: 1, waiting: 0 }),
    close: () => client.close(),
  }
  await handle.rows(queryBuilder.insert(schema.users).values({ id: DEV_USER_ID }).onConflictDoNothing())
  log.info({ dataDir }, 'embedded database ready (PGlite)')
  return handle
}
