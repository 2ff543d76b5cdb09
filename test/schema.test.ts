import { sql } from 'drizzle-orm'
import t, { type Test } from 'tap'
import { freshDatabase, startApp, testConfig, type RunningApp } from './helper.ts'

/** Contract section 5: the shared tables other services read. Names and types are stable. */
const CONTRACT_COLUMNS: Record<string, Record<string, string>> = {
  users: { id: 'text', created_at: 'timestamp with time zone' },
  book_jobs: {
    id: 'text',
    user_id: 'text',
    job_type: 'job_type',
    status: 'job_status',
    input_data: 'jsonb',
    error: 'text',
    created_at: 'timestamp with time zone',
    updated_at: 'timestamp with time zone',
    completed_at: 'timestamp with time zone',
  },
  books: {
    id: 'text',
    job_id: 'text',
    user_id: 'text',
    title: 'text',
    topic: 'text',
    goal: 'text',
    outline: 'jsonb',
    word_count: 'integer',
    chapter_count: 'integer',
    generated_at: 'timestamp with time zone',
    created_at: 'timestamp with time zone',
    updated_at: 'timestamp with time zone',
  },
  chapters: { id: 'text', book_id: 'text', position: 'integer', title: 'text', description: 'text', content: 'text', word_count: 'integer' },
  webhook_dead_letters: { webhook_id: 'text', job_id: 'text', reason: 'text', payload: 'jsonb', received_at: 'timestamp with time zone' },
}

async function checkSchema (t: Test, running: RunningApp) {
  const columns = await running.query<{ table_name: string, column_name: string, type: string, is_nullable: string }>(sql`
    SELECT table_name, column_name, is_nullable,
      CASE WHEN data_type = 'USER-DEFINED' THEN udt_name ELSE data_type END AS type
    FROM information_schema.columns WHERE table_schema = 'public'`)
  for (const [table, expected] of Object.entries(CONTRACT_COLUMNS)) {
    for (const [column, type] of Object.entries(expected)) {
      const found = columns.find((c) => c.table_name === table && c.column_name === column)
      t.equal(found?.type, type, `${table}.${column} is ${type}`)
    }
  }
  t.ok(columns.some((c) => c.table_name === 'webhook_dead_letters' && c.column_name === 'id'), 'webhook_dead_letters.id')
  for (const [table, column] of [['book_jobs', 'user_id'], ['books', 'job_id'], ['books', 'user_id'], ['chapters', 'book_id']]) {
    t.equal(columns.find((c) => c.table_name === table && c.column_name === column)?.is_nullable, 'NO', `${table}.${column} is not null`)
  }

  const enums = await running.query<{ name: string, labels: string[] }>(sql`
    SELECT t.typname AS name, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
    FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname`)
  t.same(enums.find((e) => e.name === 'job_type')?.labels, ['BOOK_GENERATION'])
  t.same(enums.find((e) => e.name === 'job_status')?.labels, ['PENDING', 'RUNNING', 'COMPLETED', 'FAILED'])

  const constraints = await running.query<{ definition: string, table: string }>(sql`
    SELECT conrelid::regclass::text AS table, pg_get_constraintdef(oid) AS definition
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace`)
  const has = (table: string, pattern: RegExp) => constraints.some((c) => c.table === table && pattern.test(c.definition))
  t.ok(has('users', /^PRIMARY KEY \(id\)$/), 'users primary key')
  t.ok(has('book_jobs', /^PRIMARY KEY \(id\)$/), 'book_jobs primary key')
  t.ok(has('book_jobs', /^FOREIGN KEY \(user_id\) REFERENCES users\(id\)$/), 'book_jobs.user_id → users')
  t.ok(has('books', /^UNIQUE \(job_id\)$/), 'one book per job')
  t.ok(has('books', /^FOREIGN KEY \(job_id\) REFERENCES book_jobs\(id\)$/), 'books.job_id → book_jobs')
  t.ok(has('books', /^FOREIGN KEY \(user_id\) REFERENCES users\(id\)$/), 'books.user_id → users')
  t.ok(has('chapters', /^FOREIGN KEY \(book_id\) REFERENCES books\(id\) ON DELETE CASCADE$/), 'chapters.book_id → books on delete cascade')
  t.ok(has('chapters', /^UNIQUE \(book_id, "?position"?\)$/), 'unique (book_id, position)')
}

t.test('the migrations create the contract tables on Postgres', async (t) => {
  const databaseUrl = await freshDatabase(t)
  await checkSchema(t, await startApp(t, testConfig(databaseUrl)))
})

t.test('the same migrations create them on the embedded database (PGlite)', async (t) => {
  await checkSchema(t, await startApp(t, testConfig(undefined, { environment: 'development', dataDir: 'memory://' })))
})
