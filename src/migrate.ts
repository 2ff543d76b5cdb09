import { migratePostgres } from './db/migrations.ts'

/**
 * The deploy step: applies migrations/ to DATABASE_URL. Compiled to dist/migrate.js, which is what
 * `npm run db:migrate` and the image (`node dist/migrate.js`) run; it needs no dev dependency.
 * Safe to start twice at once: the second waits for the first's advisory lock.
 */
const url = process.env.DATABASE_URL?.trim()
if (!url) {
  process.stderr.write('configuration error: DATABASE_URL: is required to run migrations\n')
  process.exit(1)
}
try {
  await migratePostgres(url, {
    onWait: () => process.stdout.write('another migration is running: waiting for its lock\n'),
  })
} catch (err) {
  // One line an operator can act on (connection refused, authentication, a failing statement).
  const { code, message } = err as { code?: string, message?: string }
  const cause = (err as { cause?: { code?: string, message?: string } }).cause
  process.stderr.write(`migration failed: ${cause?.message ?? message ?? String(err)}${cause?.code ?? code ? ` (${cause?.code ?? code})` : ''}\n`)
  process.exit(1)
}
process.stdout.write('migrations applied\n')
