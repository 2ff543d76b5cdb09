import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { migratePostgres } from '../src/db/migrations.ts'
import { BENCH_USER_ID } from './book.ts'

/** The server the benchmark creates its database on (the same default as the tests). */
export const ADMIN_DATABASE_URL = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ??
  'postgres://postgres@127.0.0.1:5432/postgres'

export async function adminQuery<T extends pg.QueryResultRow = pg.QueryResultRow> (text: string, url = ADMIN_DATABASE_URL): Promise<T[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<T>(text)).rows
  } finally {
    await client.end()
  }
}

export interface BenchDatabase {
  name: string
  url: string
  postmasterPid: number
  drop: () => Promise<void>
}

/** A fresh database, migrated, with the user the deliveries name. */
export async function createBenchDatabase (): Promise<BenchDatabase> {
  const name = `bcw_bench_${randomUUID().replaceAll('-', '').slice(0, 16)}`
  await adminQuery(`CREATE DATABASE ${name}`)
  const url = new URL(ADMIN_DATABASE_URL)
  url.pathname = `/${name}`
  const drop = async () => { await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) }
  try {
    await migratePostgres(url.toString())
    await adminQuery(`INSERT INTO users (id) VALUES ('${BENCH_USER_ID}')`, url.toString())
    const [dir] = await adminQuery<{ data_directory: string }>('SHOW data_directory')
    // The first line of postmaster.pid is the postmaster's pid (readable when run as root or postgres).
    const postmasterPid = Number(readFileSync(join(dir!.data_directory, 'postmaster.pid'), 'utf8').split('\n', 1)[0])
    return { name, url: url.toString(), postmasterPid, drop }
  } catch (err) {
    await drop()
    throw err
  }
}
