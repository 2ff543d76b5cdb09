import { fileURLToPath } from 'node:url'
import type { PgliteDatabase } from 'drizzle-orm/pglite'
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres'
import { migrate as migratePg } from 'drizzle-orm/node-postgres/migrator'
import pg from 'pg'

/** `migrations/` at the project root, from src/db (tsx) and dist/db (compiled) alike. */
const MIGRATIONS_FOLDER = fileURLToPath(new URL('../../migrations', import.meta.url))

/**
 * The advisory lock every migrator of this schema takes (any fixed bigint; advisory locks are per
 * database). drizzle-orm's migrator takes none (drizzle-team/drizzle-orm#874): two runs started
 * together would both find a migration unapplied and race on its CREATE TYPE.
 */
export const MIGRATION_LOCK_KEY = 108_179_344_943_463

interface MigrateOptions {
  /** Told once when another migrator holds the lock and this one starts waiting for it. */
  onWait?: () => void
}

/**
 * Applies migrations/ on one connection that holds MIGRATION_LOCK_KEY throughout: a second
 * migrator waits, then finds everything applied and does nothing. The lock is released with the
 * connection even if the process dies.
 */
export async function migratePostgres (connectionString: string, options: MigrateOptions = {}): Promise<void> {
  const client = new pg.Client({ connectionString, application_name: 'book-completion-webhook:migrate' })
  await client.connect()
  try {
    const { rows: [attempt] } = await client.query<{ locked: boolean }>(
      'SELECT pg_try_advisory_lock($1) AS locked', [MIGRATION_LOCK_KEY])
    if (!attempt?.locked) {
      options.onWait?.()
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY])
    }
    try {
      await migratePg(drizzlePg(client), { migrationsFolder: MIGRATIONS_FOLDER })
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY])
    }
  } finally {
    await client.end()
  }
}

export async function migrateEmbedded (db: PgliteDatabase<Record<string, unknown>>): Promise<void> {
  const { migrate: migratePglite } = await import('drizzle-orm/pglite/migrator')
  await migratePglite(db, { migrationsFolder: MIGRATIONS_FOLDER })
}
