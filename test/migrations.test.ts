import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import pg from 'pg'
import t, { type Test } from 'tap'
import { MIGRATION_LOCK_KEY } from '../src/db/migrations.ts'
import { requiresPostgres } from './helper.ts'
import { compileService, ROOT } from './support/compiled.ts'
import { adminQuery, createDatabase } from './support/postgres.ts'
import { startProcess } from './support/process.ts'

/**
 * Contract section 7: migrations are safe to start twice at once (two replicas, two deploys):
 * one waits for the other's advisory lock, both exit 0, each migration is applied once.
 */
const journal = JSON.parse(await readFile(join(ROOT, 'migrations/meta/_journal.json'), 'utf8')) as { entries: Array<{ tag: string }> }
const MIGRATIONS = journal.entries.length

interface Migrator { code: Promise<number | string>, output: () => string }

if (await requiresPostgres(t, 'concurrent db:migrate on a fresh database')) {
  const service = await compileService(t)
  async function freshEmptyDatabase (t: Test): Promise<string> {
    const { url, drop } = await createDatabase('bcw_migrate')
    t.teardown(drop)
    return url
  }

  /** `node dist/migrate.js`, the image's and `npm run db:migrate`'s entry, as its own process. */
  function startMigrate (databaseUrl: string): Migrator {
    const migrator = startProcess(t, process.execPath, [join(service.dir, 'dist/migrate.js')], { env: { PATH: process.env.PATH, DATABASE_URL: databaseUrl } })
    return { code: migrator.exited, output: migrator.output }
  }

  async function appliedMigrations (databaseUrl: string): Promise<{ rows: number, distinct: number }> {
    const [row] = await adminQuery<{ rows: number, distinct: number }>(
      'SELECT count(*)::int AS rows, count(DISTINCT hash)::int AS distinct FROM drizzle.__drizzle_migrations', databaseUrl)
    return row!
  }

  t.test('a migrator waits while another holds the lock, then applies everything', async (t) => {
    const databaseUrl = await freshEmptyDatabase(t)
    const holder = new pg.Client({ connectionString: databaseUrl })
    await holder.connect()
    t.teardown(() => holder.end())
    await holder.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY])

    const migrator = startMigrate(databaseUrl)
    let waiting = false
    for (let i = 0; i < 100 && !waiting; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      const { rows } = await holder.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
      waiting = rows[0]!.n === 1
    }
    t.ok(waiting, 'the migrator waits for the advisory lock')
    const { rows: tables } = await holder.query("SELECT 1 FROM information_schema.tables WHERE table_schema = 'public'")
    t.equal(tables.length, 0, 'and has created nothing meanwhile')
    await holder.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY])

    t.equal(await migrator.code, 0, migrator.output())
    t.match(migrator.output(), /another migration is running: waiting for its lock\n[^]*migrations applied/, 'it says it waited')
    t.same(await appliedMigrations(databaseUrl), { rows: MIGRATIONS, distinct: MIGRATIONS })
  })

  t.test('three rounds of two db:migrate started together on a fresh database: both exit 0, each migration applied once', async (t) => {
    for (let round = 1; round <= 3; round++) {
      const databaseUrl = await freshEmptyDatabase(t)
      const pair = [startMigrate(databaseUrl), startMigrate(databaseUrl)]
      const codes = await Promise.all(pair.map((migrator) => migrator.code))
      t.same(codes, [0, 0], `round ${round}: both exit 0\n${pair.map((migrator) => migrator.output()).join('---\n')}`)
      for (const migrator of pair) t.match(migrator.output(), /migrations applied\n$/, `round ${round}: each says so`)
      t.same(await appliedMigrations(databaseUrl), { rows: MIGRATIONS, distinct: MIGRATIONS }, `round ${round}: ${MIGRATIONS} migrations, each recorded once`)
      const rows = await adminQuery<{ table_name: string }>(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name", databaseUrl)
      t.same(rows.map((row) => row.table_name), ['book_jobs', 'books', 'chapters', 'users', 'webhook_dead_letters'], `round ${round}: the schema is complete`)
    }
  })

  t.test('migrating an up-to-date database again is a no-op', async (t) => {
    const databaseUrl = await freshEmptyDatabase(t)
    t.equal(await startMigrate(databaseUrl).code, 0)
    const again = startMigrate(databaseUrl)
    t.equal(await again.code, 0)
    t.same(await appliedMigrations(databaseUrl), { rows: MIGRATIONS, distinct: MIGRATIONS })
  })
}
