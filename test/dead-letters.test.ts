import { sql } from 'drizzle-orm'
import t from 'tap'
import { replayDeadLetter } from '../src/webhooks/dead-letters.ts'
import { completedDelivery, failedDelivery } from '../scripts/deliveries.ts'
import { count, createUser, deliver, freshDatabase, postgresAvailable, requiresPostgres, signedHeaders, snapshot, startApp, testConfig } from './helper.ts'
import { compileService, type CliResult } from './support/compiled.ts'
import { SECRET_FORMS } from './support/leaks.ts'

const databaseUrl = await freshDatabase(t)
const running = await startApp(t, testConfig(databaseUrl))
// The CLI needs a server to connect to; on the embedded database its tests are skipped.
const service = await postgresAvailable() ? await compileService(t) : undefined

/**
 * `npm run dead-letters -- …` as an operator runs it: `node dist/cli/dead-letters.js` (what the
 * npm script runs, compiled as by `npm run build`), DATABASE_URL from the environment.
 */
function cli (args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return service!.run('cli/dead-letters.js', args, { PATH: process.env.PATH, DATABASE_URL: databaseUrl!, ...env })
}

interface Letter { id: number, webhook_id: string, job_id: string, reason: string, payload: unknown, replayed_at: string | null, row: string }
const letters = () => running.query<Letter>(sql`
  SELECT id::int AS id, webhook_id, job_id, reason, payload, replayed_at::text AS replayed_at, t::text AS row
  FROM webhook_dead_letters t ORDER BY id`)
const jobRow = (jobId: string) => running.query(sql`
  SELECT j.status::text AS status, j.error, j.user_id, j.updated_at::text AS job_updated, b.updated_at::text AS book_updated,
    (SELECT count(*)::int FROM chapters c WHERE c.book_id = b.id) AS chapters
  FROM book_jobs j LEFT JOIN books b ON b.job_id = j.id WHERE j.id = ${jobId}`)

const book = completedDelivery({ userId: 'late-user', chapters: 4 })
const failure = failedDelivery(`failed-${Date.now()}`, 'quota exceeded')
let bookLetter: Letter
let failureLetter: Letter
let bookWebhookId: string

t.test('an undeliverable delivery is a 422 and a dead letter that holds no secret', async (t) => {
  const first = await deliver(running.endpoint, book)
  bookWebhookId = first.webhookId!
  t.equal(first.status, 422)
  t.equal(first.body.error, 'unprocessable_delivery')
  const second = await deliver(running.endpoint, failure)
  t.equal(second.status, 422)

  const stored = await letters()
  t.equal(stored.length, 2)
  ;[bookLetter, failureLetter] = stored as [Letter, Letter]
  t.match(bookLetter, { webhook_id: first.webhookId, job_id: book.job_id, reason: 'user "late-user" does not exist', replayed_at: null })
  t.same(bookLetter.payload, book, 'the payload is the delivery as validated')
  t.match(failureLetter, { job_id: failure.job_id, reason: /no user/ })
  for (const letter of stored) {
    const leaked = [...SECRET_FORMS, first.signature!, second.signature!, first.signature!.slice(3)].filter((value) => letter.row.includes(value))
    t.same(leaked, [], `dead letter ${letter.id} holds no secret or signature`)
    t.notMatch(letter.row, /webhook-signature|v1,/, 'nor any header')
  }
  t.equal(await count(running, 'book_jobs'), 0, 'nothing else was written')
})

t.test('the CLI lists dead letters; replaying while the user is still missing writes nothing, not even a second dead letter', async (t) => {
  if (!(await requiresPostgres(t, 'the CLI connects to DATABASE_URL'))) return
  const brokenUrl = new URL(databaseUrl!)
  brokenUrl.pathname = '/bcw_no_such_database'
  // Independent invocations, run together (each CLI start costs a second or two of TypeScript loading).
  const [listed, replay, failing, listedJson, latest, dryRun] = await Promise.all([
    cli(['list']),
    cli(['replay', String(bookLetter.id)]),
    cli(['replay', '--all'], { DATABASE_URL: brokenUrl.toString() }),
    cli(['list', '--pending', '--json']),
    cli(['list', '--limit', '1']),
    cli(['replay', '--all', '--dry-run']),
  ])
  t.equal(listedJson.code, 0, listedJson.stderr)
  t.match(JSON.parse(listedJson.stdout), [
    { id: bookLetter.id, jobId: book.job_id, webhookId: bookWebhookId, reason: 'user "late-user" does not exist', replayedAt: null, receivedAt: String },
    { id: failureLetter.id, jobId: failure.job_id, replayedAt: null },
  ], 'list --pending --json: one JSON array, oldest first')
  t.equal(JSON.parse(listedJson.stdout).length, 2)
  t.notOk(listedJson.stdout.includes(book.book_data.chapters[0]!.content), 'no payload in the JSON either')
  t.equal(latest.code, 0, latest.stderr)
  t.notMatch(latest.stdout, new RegExp(`^${bookLetter.id}\\t`, 'm'), '--limit 1: only the latest letter')
  t.match(latest.stdout, new RegExp(`^${failureLetter.id}\\t`, 'm'))
  t.match(latest.stdout, /^2 dead letter\(s\), 2 pending \(showing the latest 1\)$/m)
  t.equal(dryRun.code, 1, 'dry run: the letters could not be replayed')
  t.match(dryRun.stdout, new RegExp(`^${bookLetter.id}\\t${book.job_id}\\tstill_unapplicable\\t`, 'm'))
  t.match(dryRun.stdout, /^dry run, nothing written: 0 would be replayed, 2 would not$/m)
  t.equal(listed.code, 0, listed.stderr)
  t.match(listed.stdout, new RegExp(`^${bookLetter.id}\\t.+\\tpending\\t${book.job_id}\\t${bookWebhookId}\\tuser "late-user" does not exist$`, 'm'))
  t.match(listed.stdout, new RegExp(`^${failureLetter.id}\\t.+\\tpending\\t${failure.job_id}\\t`, 'm'))
  t.match(listed.stdout, /2 dead letter\(s\), 2 pending/)
  t.notOk(listed.stdout.includes(book.book_data.chapters[0]!.content), 'no book text is printed')

  t.equal(replay.code, 1)
  t.match(replay.stdout, new RegExp(`^${bookLetter.id}\\t${book.job_id}\\tstill_unapplicable\\tuser "late-user" does not exist$`, 'm'))
  t.equal((await letters()).length, 2, 'no second dead letter')
  t.equal((await letters())[0]!.replayed_at, null, 'still pending')
  t.equal(await count(running, 'book_jobs'), 0)

  t.equal(failing.code, 1)
  t.match(failing.stderr, /^dead-letters failed: 3D000 database "bcw_no_such_database" does not exist\n$/, 'a failure is one line: no stack, no SQL')
})

t.test('after the user is created, replay applies the delivery and marks it; replaying again changes nothing', async (t) => {
  if (!(await requiresPostgres(t, 'the CLI connects to DATABASE_URL'))) return
  await createUser(running, 'late-user')
  const before = await snapshot(running)
  const dryRun = await cli(['replay', String(bookLetter.id), '--dry-run', '--json'])
  t.equal(dryRun.code, 0, dryRun.stderr)
  t.same(dryRun.stdout.trim().split('\n').map((line) => JSON.parse(line)),
    [{ id: bookLetter.id, jobId: book.job_id, outcome: 'book_created', dryRun: true }], 'dry run --json: what the replay would do, one JSON line')
  t.same(await snapshot(running), before, 'and nothing was written')
  t.equal((await letters())[0]!.replayed_at, null, 'the letter is still pending')

  const replay = await cli(['replay', String(bookLetter.id)])
  t.equal(replay.code, 0, replay.stderr)
  t.match(replay.stdout, new RegExp(`^${bookLetter.id}\\t${book.job_id}\\tbook_created$`, 'm'))
  const [job] = await jobRow(book.job_id)
  t.match(job, { status: 'COMPLETED', user_id: 'late-user', chapters: 4 })
  const [chapter] = await running.query<{ content: string }>(sql`
    SELECT c.content FROM chapters c JOIN books b ON b.id = c.book_id WHERE b.job_id = ${book.job_id} AND c.position = 1`)
  t.equal(chapter?.content, book.book_data.chapters[0]!.content, 'the stored chapter is the one sent')
  t.not((await letters())[0]!.replayed_at, null, 'marked replayed')

  const again = await replayDeadLetter(running.app.db, bookLetter.id, { defaultUserId: undefined, fallbackToOldestUser: false, log: running.app.log })
  t.equal(again.outcome, 'already_replayed')
  t.same(await jobRow(book.job_id), [job], 'job, book and chapters untouched (updated_at unchanged)')

  // The sender's own retry of the same delivery (same webhook-id) is now a duplicate.
  const body = JSON.stringify(book)
  const retry = await deliver(running.endpoint, body, signedHeaders(body, { id: bookWebhookId }))
  t.equal(retry.status, 200)
  t.match(retry.body, { created: false, chaptersCreated: 4 })
  t.same(await jobRow(book.job_id), [job], 'the retry rewrote nothing')
})

t.test('replay --all applies what is pending (DEFAULT_USER_ID owns user-less deliveries), twice is a no-op', async (t) => {
  if (!(await requiresPostgres(t, 'the CLI connects to DATABASE_URL'))) return
  await createUser(running, 'ops-default')
  const all = await cli(['replay', '--all'], { DEFAULT_USER_ID: 'ops-default' })
  t.equal(all.code, 0, all.stderr)
  t.match(all.stdout, new RegExp(`^${failureLetter.id}\\t${failure.job_id}\\tjob_failed$`, 'm'))
  t.notMatch(all.stdout, new RegExp(`^${bookLetter.id}\\t`, 'm'), 'the replayed letter is not replayed again')
  const [job] = await jobRow(failure.job_id)
  t.match(job, { status: 'FAILED', error: 'quota exceeded', user_id: 'ops-default' })

  const before = await letters()
  const again = await cli(['replay', '--all'], { DEFAULT_USER_ID: 'ops-default' })
  t.equal(again.code, 0)
  t.match(again.stdout, /^0 replayed, 0 not$/m)
  t.same(await letters(), before)
  t.same(await jobRow(failure.job_id), [job])

  const missing = await replayDeadLetter(running.app.db, 999_999, { defaultUserId: undefined, fallbackToOldestUser: false, log: running.app.log })
  t.same(missing, { id: 999_999, jobId: null, outcome: 'not_found' })
})

t.test('concurrent replays of one dead letter apply it once', async (t) => {
  const racing = completedDelivery({ userId: 'racing-user', chapters: 2 })
  t.equal((await deliver(running.endpoint, racing)).status, 422)
  const [letter] = await running.query<{ id: number }>(sql`SELECT id::int AS id FROM webhook_dead_letters WHERE job_id = ${racing.job_id}`)
  await createUser(running, 'racing-user')
  const context = { defaultUserId: undefined, fallbackToOldestUser: false, log: running.app.log }
  const results = await Promise.all(Array.from({ length: 4 }, () => replayDeadLetter(running.app.db, letter!.id, context)))
  t.same(results.map((result) => result.outcome).sort(), ['already_replayed', 'already_replayed', 'already_replayed', 'book_created'])
  t.equal(await count(running, 'books', sql`job_id = ${racing.job_id}`), 1)
  t.equal(await count(running, 'chapters', sql`book_id = (SELECT id FROM books WHERE job_id = ${racing.job_id})`), 2)
})

t.test('a stored payload that no longer validates is not replayed', async (t) => {
  await running.query(sql`
    INSERT INTO webhook_dead_letters (webhook_id, job_id, reason, payload)
    VALUES ('msg_tampered', 'tampered', 'test', '{"job_id":"tampered","status":"completed"}'::jsonb)`)
  const [letter] = await running.query<{ id: number }>(sql`SELECT id::int AS id FROM webhook_dead_letters WHERE job_id = 'tampered'`)
  const result = await replayDeadLetter(running.app.db, letter!.id, { defaultUserId: 'late-user', fallbackToOldestUser: false, log: running.app.log })
  t.match(result, { outcome: 'invalid_payload', reason: /timestamp|environment/ })
  t.equal(await count(running, 'book_jobs', sql`id = 'tampered'`), 0)
})

t.test('the CLI: --help, and a bad command line is one line on stderr and exit 2', async (t) => {
  if (!(await requiresPostgres(t, 'the compiled CLI'))) return
  const help = await cli(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /^usage: npm run dead-letters -- <command> \[options\]/)
  for (const option of ['list [--pending] [--json] [--limit N]', 'replay <id> [--dry-run]', 'replay --all', 'DATABASE_URL']) {
    t.ok(help.stdout.includes(option), `--help mentions ${option}`)
  }
  const cases: Array<[string[], RegExp]> = [
    [['list', '--bogus'], /^dead-letters: Unknown option '--bogus'/],
    [['list', '--limit', 'ten'], /^dead-letters: --limit must be a positive integer \(got "ten"\)/],
    [['replay', '7', '--all'], /^dead-letters: replay needs one dead letter id or --all/],
    [['forget'], /^dead-letters: unknown command "forget"/],
  ]
  const results = await Promise.all(cases.map(([args]) => cli(args)))
  results.forEach((result, i) => {
    const [args, expected] = cases[i]!
    t.equal(result.code, 2, `${args.join(' ') || '(nothing)'}: exit 2`)
    t.match(result.stderr, expected)
    t.equal(result.stderr.split('\n').filter(Boolean).length, 1, 'one line, no stack')
    t.equal(result.stdout, '')
  })
  const noDatabase = await cli(['list'], { DATABASE_URL: '' })
  t.equal(noDatabase.code, 2)
  t.match(noDatabase.stderr, /^dead-letters: DATABASE_URL is required/)
  const refused = await cli(['list'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' })
  t.equal(refused.code, 1)
  t.match(refused.stderr, /^dead-letters failed: connect ECONNREFUSED 127\.0\.0\.1:1\n$/, 'an unreachable database: one line, exit 1')
})
