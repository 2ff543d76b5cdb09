import { fileURLToPath } from 'node:url'
import type { PgliteDatabase } from 'drizzle-orm/pglite'
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator'
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres'
import { migrate as migratePg } from 'drizzle-orm/node-postgres/migrator'
import pg from 'pg'

/** `migrations/` at the project root, from src/db (tsx) and dist/db (compiled) alike. */
const MIGRATIONS_FOLDER = fileURLToPath(new URL('../../migrations', import.meta.url))

export async function migratePostgres (connectionString: string): Promise<void> {
  const pool = new pg.Pool({ connectionString, max: 1 })
  try {
    await migratePg(drizzlePg(pool), { migrationsFolder: MIGRATIONS_FOLDER })
  } finally {
    await pool.end()
  }
}

export async function migrateEmbedded (db: PgliteDatabase<Record<string, unknown>>): Promise<void> {
  await migratePglite(db, { migrationsFolder: MIGRATIONS_FOLDER })
}
