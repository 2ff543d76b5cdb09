import { migratePostgres } from './db/migrations.ts'

/** The deploy step: applies migrations/ to DATABASE_URL (`npm run db:migrate`, `node dist/migrate.js`). */
const url = process.env.DATABASE_URL?.trim()
if (!url) {
  process.stderr.write('configuration error: DATABASE_URL: is required to run migrations\n')
  process.exit(1)
}
await migratePostgres(url)
process.stdout.write('migrations applied\n')
