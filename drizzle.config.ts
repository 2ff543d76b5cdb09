import type { Config } from 'drizzle-kit'

// `npm run db:generate` needs no database: it diffs src/db/schema.ts against migrations/meta.
// Migrations are applied by `npm run db:migrate` (src/migrate.ts), not by drizzle-kit.
export default {
  dialect: 'postgresql',
  schema: './src/db/schema.ts',
  out: './migrations',
} satisfies Config
