import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'

/** The Postgres server of the tests and the benchmark. */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

/** One statement on a connection of its own (CREATE DATABASE cannot run in a pool's transaction). */
export async function adminQuery<T extends pg.QueryResultRow = pg.QueryResultRow> (text: string, url = TEST_DATABASE_URL, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<T>(text, values)).rows
  } finally {
    await client.end()
  }
}

interface CreatedDatabase { name: string, url: string, drop: () => Promise<void> }

/** A new, empty database `<prefix>_<random>` on the server of `serverUrl`; `drop` removes it, connections and all. */
export async function createDatabase (prefix: string, serverUrl = TEST_DATABASE_URL): Promise<CreatedDatabase> {
  const name = `${prefix}_${randomUUID().replaceAll('-', '').slice(0, 16)}`
  await adminQuery(`CREATE DATABASE ${name}`, serverUrl)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  return { name, url: url.toString(), drop: async () => { await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`, serverUrl) } }
}

/** Where Debian's Postgres puts its Unix socket. */
export const POSTGRES_SOCKET_DIR = '/var/run/postgresql'

/**
 * The same database through the server's Unix socket (`?host=DIR`), when the server is this
 * machine's and its socket is there: a container on a network of its own reaches the host's
 * Postgres through the mounted directory, with no address to open on the host. Else undefined.
 */
export function unixSocketUrl (url: string, dir = POSTGRES_SOCKET_DIR): string | undefined {
  const parsed = new URL(url)
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(parsed.hostname)) return undefined
  if (!existsSync(join(dir, `.s.PGSQL.${parsed.port || 5432}`))) return undefined
  parsed.hostname = 'localhost'
  parsed.searchParams.set('host', dir)
  return parsed.toString()
}
