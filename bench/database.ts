import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { migratePostgres } from '../src/db/migrations.ts'
import { adminQuery, createDatabase, TEST_DATABASE_URL } from '../test/support/postgres.ts'

/** The user every benchmark delivery names, created with the database. */
export const BENCH_USER_ID = 'bench-user'

/** The server the benchmark creates its database on: BENCH_DATABASE_URL, else the tests' server. */
const SERVER_URL = process.env.BENCH_DATABASE_URL ?? TEST_DATABASE_URL

export interface BenchDatabase {
  name: string
  url: string
  postmasterPid: number
  drop: () => Promise<void>
}

/** A fresh database, migrated, with the user the deliveries name. */
export async function createBenchDatabase (): Promise<BenchDatabase> {
  const { name, url, drop } = await createDatabase('bcw_bench', SERVER_URL)
  try {
    await migratePostgres(url)
    await adminQuery('INSERT INTO users (id) VALUES ($1)', url, [BENCH_USER_ID])
    const [dir] = await adminQuery<{ data_directory: string }>('SHOW data_directory', SERVER_URL)
    // The first line of postmaster.pid is the postmaster's pid (readable when run as root or postgres).
    const postmasterPid = Number(readFileSync(join(dir!.data_directory, 'postmaster.pid'), 'utf8').split('\n', 1)[0])
    return { name, url, postmasterPid, drop }
  } catch (err) {
    await drop()
    throw err
  }
}
