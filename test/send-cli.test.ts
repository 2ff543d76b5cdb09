import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import t from 'tap'
import { count, createUser, freshDatabase, snapshot, startApp, TEST_SECRET, testConfig } from './helper.ts'
import { runProcess, type ProcessRun } from './support/process.ts'
import { freePort } from './support/free-port.ts'

/** `npm run send` as a child process against the real app, as a developer runs it. */

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const SEED_FILE = fileURLToPath(new URL('./fixtures/contract-seed-delivery.json', import.meta.url))

interface Attempt { status: number, timeMs: number, body: Record<string, unknown> }

function runSend (args: string[]): Promise<ProcessRun> {
  const env = { ...process.env }
  delete env.WEBHOOK_SECRET
  delete env.NODE_OPTIONS // tap's process tracking: the CLI is measured by its behaviour, not its coverage
  return runProcess(process.execPath, ['--import', 'tsx', 'scripts/send.ts', ...args], { cwd: ROOT, env })
}

/** Each `[i/n] <status> · <ms> ms round trip` line and the JSON body printed under it. */
function attempts (stdout: string): Attempt[] {
  const found: Array<{ status: number, timeMs: number, lines: string[] }> = []
  for (const line of stdout.split('\n')) {
    const header = /^\[\d+\/\d+\] (\d{3}) · ([\d.]+) ms round trip/.exec(line)
    if (header) found.push({ status: Number(header[1]), timeMs: Number(header[2]), lines: [] })
    else if (found.length > 0 && !line.startsWith('hint:')) found.at(-1)!.lines.push(line)
  }
  return found.map(({ status, timeMs, lines }) => ({ status, timeMs, body: JSON.parse(lines.join('\n')) }))
}

const databaseUrl = await freshDatabase(t)
const production = await startApp(t, testConfig(databaseUrl))
await createUser(production, 'reader-1')
await createUser(production, 'user_clerkid_123')

t.test('--sample, signed: a 200 and the French book stored with its five chapters', async (t) => {
  const run = await runSend(['--sample', '--secret', TEST_SECRET, '--user-id', 'reader-1', '--url', production.endpoint])
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, `POST ${production.endpoint}`)
  t.match(run.stdout, /5 chapters · user_id reader-1 · [\d.]+ KB · signed with 1 key · webhook-id msg_/)
  const [answer, ...more] = attempts(run.stdout)
  t.equal(more.length, 0)
  t.equal(answer?.status, 200)
  t.ok(answer!.timeMs > 0, 'prints the round-trip time')
  t.match(answer?.body, { success: true, created: true, chaptersCreated: 5 })

  const jobId = answer!.body.jobId as string
  const [book] = await production.query<{ title: string, word_count: number, chapter_count: number, counted: number, user_id: string }>(sql`
    SELECT b.title, b.word_count, b.chapter_count, b.user_id, (SELECT sum(word_count)::int FROM chapters c WHERE c.book_id = b.id) AS counted
    FROM books b WHERE b.job_id = ${jobId}`)
  t.match(book, { title: 'Le potager sur mon balcon : cultiver ses légumes en ville', chapter_count: 5, user_id: 'reader-1' })
  t.equal(book?.word_count, book?.counted, 'the sample\'s word_count is exact: it equals the service\'s own count')
  const [first] = await production.query<{ content: string }>(sql`
    SELECT c.content FROM chapters c JOIN books b ON b.id = c.book_id WHERE b.job_id = ${jobId} AND c.position = 1`)
  t.match(first?.content, /^# Chapitre 1 — Observer son balcon/)
  t.match(first?.content, /\*\*80 kg\*\*/, 'Markdown is stored as sent')
})

t.test('--repeat 2: the same webhook-id twice; the retry is a 200 with created false and changes nothing', async (t) => {
  const jobId = `cli-repeat-${randomBytes(4).toString('hex')}`
  const run = await runSend(['--test', '--repeat', '2', '--job-id', jobId, '--user-id', 'reader-1', '--secret', TEST_SECRET, '--url', production.endpoint])
  t.equal(run.code, 0, run.stderr)
  const [first, second] = attempts(run.stdout)
  t.match(first, { status: 200, body: { jobId, created: true, chaptersCreated: 1 } })
  t.match(second, { status: 200, body: { jobId, bookId: first?.body.bookId, created: false, chaptersCreated: 1 } })
  t.match(run.stdout, /\[2\/2\] 200 .*\(same webhook-id: a retry\)/)

  const outcomes = production.logs.filter((line) => line.msg === 'delivery' && line.jobId === jobId).map((line) => line.outcome)
  t.same(outcomes, ['book_created', 'duplicate_ignored'], 'the service saw one webhook-id twice')
  t.equal(await count(production, 'books', sql`job_id = ${jobId}`), 1)
  t.equal(await count(production, 'chapters', sql`book_id = ${first?.body.bookId as string}`), 1)
})

t.test('--file sends the contract\'s seed payload byte for byte, signed', async (t) => {
  const run = await runSend(['--file', SEED_FILE, '--secret', TEST_SECRET, '--url', production.endpoint])
  t.equal(run.code, 0, run.stderr)
  const [answer] = attempts(run.stdout)
  t.match(answer, { status: 200, body: { jobId: '3e25b048-e00e-4890-9219-4a50092b3f38', created: true, chaptersCreated: 1, wordCount: 15000 } })
  const [job] = await production.query(sql`SELECT user_id, status FROM book_jobs WHERE id = '3e25b048-e00e-4890-9219-4a50092b3f38'`)
  t.same(job, { user_id: 'user_clerkid_123', status: 'COMPLETED' })
})

t.test('--status failed --error: the job is FAILED with the error', async (t) => {
  const jobId = `cli-failed-${randomBytes(4).toString('hex')}`
  const run = await runSend(['--status', 'failed', '--error', 'Quota LLM dépassé', '--job-id', jobId, '--user-id', 'reader-1',
    '--secret', TEST_SECRET, '--url', production.endpoint])
  t.equal(run.code, 0, run.stderr)
  t.match(attempts(run.stdout), [{ status: 200, body: { jobId, created: true, bookId: null } }])
  const [job] = await production.query(sql`SELECT status, error FROM book_jobs WHERE id = ${jobId}`)
  t.same(job, { status: 'FAILED', error: 'Quota LLM dépassé' })
})

t.test('unsigned or wrongly signed, a production service answers 401; the CLI says why and exits 1', async (t) => {
  const before = await snapshot(production)
  const unsigned = await runSend(['--test', '--url', production.endpoint])
  t.equal(unsigned.code, 1)
  t.match(unsigned.stdout, /unsigned \(no --secret nor WEBHOOK_SECRET/)
  t.match(attempts(unsigned.stdout), [{ status: 401, body: { error: 'invalid_signature' } }])
  t.match(unsigned.stdout, /hint: this service requires signed deliveries: pass --secret or set WEBHOOK_SECRET/)

  const wrongSecret = `whsec_${randomBytes(32).toString('base64')}`
  const wrong = await runSend(['--test', '--secret', wrongSecret, '--url', production.endpoint])
  t.equal(wrong.code, 1)
  t.match(attempts(wrong.stdout), [{ status: 401, body: { error: 'invalid_signature', message: 'no signature matches' } }])
  t.same(await snapshot(production), before, 'nothing was written')
})

t.test('unsigned, the front end\'s test request is accepted by a development service', async (t) => {
  const development = await startApp(t, testConfig(databaseUrl, { environment: 'development' }))
  const jobId = `test-auto-create-${Math.floor(Date.now() / 1000)}-${randomBytes(2).toString('hex')}`
  const run = await runSend(['--test', '--job-id', jobId, '--url', development.endpoint])
  t.equal(run.code, 0, run.stderr)
  t.match(attempts(run.stdout), [{ status: 200, body: { jobId, created: true, chaptersCreated: 1, wordCount: 100 } }])
  const [book] = await development.query(sql`SELECT title, goal FROM books WHERE job_id = ${jobId}`)
  t.same(book, { title: 'Test Auto-Create Job', goal: 'Vérifier création auto' })
  t.match(development.logs.find((line) => line.msg === 'delivery' && line.jobId === jobId), { verified: false })
})

t.test('an unreachable service: a clear error naming the URL and the service\'s port, exit 1', async (t) => {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}/api/webhooks/book-completion`
  const run = await runSend(['--test', '--url', url])
  t.equal(run.code, 1)
  t.match(run.stderr, `error: cannot reach ${url}: connection refused: nothing listens there (ECONNREFUSED).`)
  t.match(run.stderr, /npm run dev`; it listens on port 3001/)
  t.match(run.stderr, 'Try: npm run send -- --url http://127.0.0.1:3001/api/webhooks/book-completion')
  t.notMatch(run.stderr, /\n\s+at /, 'no stack trace')
})

t.test('usage errors exit 2 before anything is sent', async (t) => {
  const noError = await runSend(['--status', 'failed', '--url', 'http://127.0.0.1:9/unused'])
  t.equal(noError.code, 2)
  t.match(noError.stderr, 'error: --status failed needs --error')
  const missing = await runSend(['--file', 'no/such/payload.json'])
  t.equal(missing.code, 2)
  t.match(missing.stderr, 'error: --file: cannot read no/such/payload.json (ENOENT)')
  t.equal(noError.stdout + missing.stdout, '', 'nothing was sent')
})
