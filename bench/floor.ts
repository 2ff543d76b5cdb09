import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { BookData } from '../src/webhooks/payload.ts'
import { countWords } from '../src/webhooks/word-count.ts'
import { runProcess } from '../test/support/process.ts'
import { adminQuery } from '../test/support/postgres.ts'
import { BENCH_USER_ID } from './database.ts'
import { backendsGone, DatabaseBackendsCpu, postgresServerCpuMs } from './proc.ts'

const literal = (text: string) => `'${text.replaceAll('\'', '\'\'')}'`

/**
 * A pgbench script that writes what one `create` delivery writes, with the same texts: the job
 * (COMPLETED, input_data, applied_webhook_ids), the book, its chapters with their word counts, in one
 * transaction of two statements. What the service adds on top (the row lock, the upserts, the
 * delete of surplus positions) is its own cost, not the database's floor.
 */
function floorScript (book: BookData): string {
  const inputData = JSON.stringify({ title: book.book_title, topic: book.topic, goal: book.goal })
  const chapters = book.chapters.map((chapter, i) =>
    `(${i + 1}, ${literal(chapter.title)}, ${literal(chapter.description)}, ${literal(chapter.content)}, ${countWords(chapter.content)})`)
  const script = [
    'BEGIN;',
    'INSERT INTO book_jobs (id, user_id, job_type, status, input_data, error, completed_at, applied_webhook_ids)',
    `VALUES ('floor-' || nextval('bench_floor_job'), ${literal(BENCH_USER_ID)}, 'BOOK_GENERATION', 'COMPLETED',`,
    `  CAST(${literal(inputData)} AS jsonb), NULL, now(), ARRAY['msg_floor'])`,
    // A number, not the text id: in simple mode pgbench pastes variables in unquoted.
    'RETURNING substr(id, 7) AS job_num \\gset',
    'WITH book AS (',
    '  INSERT INTO books (job_id, user_id, title, topic, goal, outline, word_count, chapter_count, generated_at)',
    `  VALUES ('floor-' || CAST(:job_num AS bigint), ${literal(BENCH_USER_ID)}, ${literal(book.book_title)}, ${literal(book.topic)}, ${literal(book.goal)},`,
    `    CAST(${literal(JSON.stringify(book.outline))} AS jsonb), ${book.word_count},`,
    `    ${book.chapters.length}, CAST(${literal(book.generated_at)} AS timestamptz))`,
    '  RETURNING id)',
    'INSERT INTO chapters (book_id, position, title, description, content, word_count)',
    'SELECT book.id, v.position, v.title, v.description, v.content, v.word_count',
    `FROM book CROSS JOIN (VALUES ${chapters.join(',\n')}) AS v (position, title, description, content, word_count);`,
    'COMMIT;',
    '',
  ].join('\n')
  // In prepared mode pgbench turns every ":name" into a parameter: only :job_num may appear.
  const variables = script.match(/:[A-Za-z_]\w*/g)?.filter((name) => name !== ':job_num') ?? []
  if (variables.length > 0) throw new Error(`the floor script would read ${variables.join(', ')} as pgbench variables`)
  return script
}

export interface FloorResult {
  tps: number
  transactions: number
  /** Whole Postgres server CPU per transaction (ms), and only the bench database's backends. */
  postgresCpuMsPerTx: number
  backendsCpuMsPerTx: number
  protocol: string
}

export async function runFloor (options: {
  book: BookData
  databaseUrl: string
  database: string
  postmasterPid: number
  connections: number
  durationSeconds: number
  protocol: 'prepared' | 'extended' | 'simple'
  workDir: string
}): Promise<FloorResult> {
  await adminQuery('CREATE SEQUENCE IF NOT EXISTS bench_floor_job', options.databaseUrl)
  const scriptFile = join(options.workDir, 'floor.sql')
  writeFileSync(scriptFile, floorScript(options.book))
  const url = new URL(options.databaseUrl)
  const args = [
    '-n', '-M', options.protocol, '-f', scriptFile,
    '-c', String(options.connections), '-j', '2', '-T', String(options.durationSeconds),
    '-h', url.hostname, '-p', url.port || '5432', '-U', decodeURIComponent(url.username || 'postgres'),
    options.database,
  ]
  const backends = new DatabaseBackendsCpu(options.postmasterPid, options.database)
  const serverBefore = postgresServerCpuMs(options.postmasterPid)
  backends.start()
  const pgbench = await runProcess('pgbench', args)
  const output = pgbench.stdout + pgbench.stderr
  if (pgbench.code !== 0) throw new Error(`pgbench exited with ${pgbench.code}:\n${output.slice(-2000)}`)
  await backendsGone(options.postmasterPid, options.database)
  const backendsMs = backends.stop()
  const serverMs = postgresServerCpuMs(options.postmasterPid) - serverBefore
  const transactions = Number(/number of transactions actually processed: (\d+)/.exec(output)?.[1])
  const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(output)?.[1])
  const failed = Number(/number of failed transactions: (\d+)/.exec(output)?.[1] ?? 0)
  if (!transactions || !tps || failed > 0) throw new Error(`pgbench did not report a clean run:\n${output.slice(-2000)}`)
  return {
    tps,
    transactions,
    postgresCpuMsPerTx: serverMs / transactions,
    backendsCpuMsPerTx: backendsMs / transactions,
    protocol: options.protocol,
  }
}
