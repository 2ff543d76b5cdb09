import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import pg from 'pg'
import t from 'tap'
import { WATCH_APPLICATION_NAME } from '../src/cli/watch-events.ts'
import { BOOK_EVENTS_CHANNEL, type BookEvent } from '../src/events/book-events.ts'
import { completedDelivery } from '../scripts/deliveries.ts'
import { createUser, deliver, freshDatabase, requiresPostgres, startApp, testConfig } from './helper.ts'
import { compileService, type CliResult } from './support/compiled.ts'
import { startProcess } from './support/process.ts'

/**
 * `npm run deliveries -- show | watch` (contract section 7), as an operator runs it: the compiled
 * `node dist/cli/deliveries.js` against a real database.
 */
if (await requiresPostgres(t, 'npm run deliveries (show, watch)')) {
  const databaseUrl = (await freshDatabase(t))!
  const running = await startApp(t, testConfig(databaseUrl))
  const service = await compileService(t)
  const env = { PATH: process.env.PATH, DATABASE_URL: databaseUrl }
  const cli = (args: string[], extra: Record<string, string> = {}): Promise<CliResult> =>
    service.run('cli/deliveries.js', args, { ...env, ...extra })

  await createUser(running, 'show-user')
  const book = completedDelivery({ userId: 'show-user', chapters: 3 })
  const first = await deliver(running.endpoint, book)
  const corrected = { ...book, book_data: { ...book.book_data, chapters: book.book_data.chapters.slice(0, 2), generated_at: new Date(Date.now() + 1000).toISOString() } }
  const second = await deliver(running.endpoint, corrected)
  // A job the database knows only from a dead letter (its user does not exist).
  const orphan = completedDelivery({ userId: 'nobody-yet', chapters: 1 })
  const letter = await deliver(running.endpoint, orphan)

  t.test('show: the job, its owner, status and times, the applied webhook-ids, the book figures, its dead letters', async (t) => {
    t.same([first.status, second.status, letter.status], [200, 200, 422], 'the deliveries behind this test')
    const [stored] = await running.query<{ words: number, book_id: string }>(sql`
      SELECT b.id AS book_id, (SELECT sum(word_count)::int FROM chapters c WHERE c.book_id = b.id) AS words
      FROM books b WHERE b.job_id = ${book.job_id}`)

    const [human, json, orphanReport, unknown] = await Promise.all([
      cli(['show', book.job_id]),
      cli(['show', book.job_id, '--json']),
      cli(['show', orphan.job_id, '--json']),
      cli(['show', 'no-such-job']),
    ])
    t.equal(human.code, 0, human.stderr)
    t.match(human.stdout, new RegExp(`^job +${book.job_id}$`, 'm'))
    t.match(human.stdout, /^status +COMPLETED$/m)
    t.match(human.stdout, /^owner +show-user$/m)
    t.match(human.stdout, /^completed +\d{4}-\d\d-\d\dT/m)
    t.match(human.stdout, new RegExp(`^webhook-ids +2 applied \\(oldest first\\): ${first.webhookId} ${second.webhookId}$`, 'm'))
    t.match(human.stdout, new RegExp(`^book +${stored!.book_id} "150 techniques`, 'm'))
    t.match(human.stdout, /^ {2}chapters +2 stored \(sender said 3\)$/m, 'chapters stored, beside the sender\'s figure')
    t.match(human.stdout, new RegExp(`^ {2}words +${stored!.words} counted in the chapters \\(sender said 15000\\)$`, 'm'))
    t.match(human.stdout, /^dead letters 0$/m)
    t.notOk(human.stdout.includes(book.book_data.chapters[0]!.content.slice(0, 40)), 'no book text')

    t.equal(json.code, 0, json.stderr)
    const report = JSON.parse(json.stdout)
    t.match(report, {
      jobId: book.job_id,
      job: { owner: 'show-user', status: 'COMPLETED', error: null, appliedWebhookIds: [first.webhookId, second.webhookId], completedAt: String },
      book: { id: stored!.book_id, storedChapters: 2, countedWords: stored!.words, senderChapterCount: 3, senderWordCount: 15000 },
      deadLetters: [],
    })

    t.equal(orphanReport.code, 0, 'a job known only from its dead letter is known')
    t.match(JSON.parse(orphanReport.stdout), {
      job: null,
      book: null,
      deadLetters: [{ webhookId: letter.webhookId, reason: 'user "nobody-yet" does not exist', replayedAt: null }],
    })

    t.equal(unknown.code, 1, 'nothing known: exit 1')
    t.equal(unknown.stdout, '')
    t.match(unknown.stderr, /^deliveries: nothing is known of job "no-such-job" \(no job, no dead letter\)\n$/)
  })

  t.test('--help; a bad command line or an unreachable database: one line on stderr, exit >= 1', async (t) => {
    const [help, noId, bogus, unknownCommand, refused] = await Promise.all([
      cli(['--help']),
      cli(['show']),
      cli(['watch', '--follow']),
      cli(['tail']),
      cli(['show', 'x'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' }),
    ])
    t.equal(help.code, 0)
    t.match(help.stdout, /^usage: npm run deliveries -- <command> \[options\]\n[^]*show <job_id> \[--json\][^]*watch \[--json\]/)
    for (const [result, expected] of [[noId, /^deliveries: show needs a job_id/], [bogus, /^deliveries: Unknown option '--follow'/], [unknownCommand, /^deliveries: unknown command "tail"/]] as const) {
      t.equal(result.code, 2)
      t.match(result.stderr, expected)
      t.equal(result.stderr.split('\n').filter(Boolean).length, 1, 'one line')
    }
    t.equal(refused.code, 1)
    t.match(refused.stderr, /^deliveries failed: connect ECONNREFUSED 127\.0\.0\.1:1\n$/)
  })

  /** A running `deliveries watch`: its output so far, and a way to wait for a line. */
  const startWatch = (args: string[], url = databaseUrl) =>
    startProcess(t, process.execPath, [join(service.dir, 'dist/cli/deliveries.js'), 'watch', ...args], { env: { PATH: process.env.PATH, DATABASE_URL: url } })

  const admin = new pg.Client({ connectionString: databaseUrl })
  await admin.connect()
  t.teardown(() => admin.end())
  const notify = (payload: unknown) =>
    admin.query('SELECT pg_notify($1, $2)', [BOOK_EVENTS_CHANNEL, typeof payload === 'string' ? payload : JSON.stringify(payload)])

  const event = (overrides: Partial<BookEvent> = {}): BookEvent => ({
    event: 'book_created', job_id: `watch-${Date.now()}`, book_id: 'book-1', user_id: 'show-user', chapter_count: 3, webhook_id: 'msg_watch', ...overrides,
  })

  t.test('deliveries watch: a line per book_events notification, reconnects after a dropped connection, SIGINT exits 0', async (t) => {
    const watch = startWatch([])
    t.ok(await watch.waitFor('stderr', /^deliveries: listening on book_events$/m), `it listens\n${watch.out.stderr}`)

    const created = event()
    await notify(created)
    t.ok(await watch.waitFor('stdout', /book_created/), 'the event is printed')
    t.match(watch.out.stdout, new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z book_created job=${created.job_id} book=book-1 user=show-user chapters=3\\n$`),
      'one line: time, event, job, book, user, chapters')

    await notify('not json at all')
    await notify({ event: 'book_deleted', job_id: 'x' })
    t.ok(await watch.waitFor('stderr', /ignored a notification that is not a book event: "\{\\"event\\":\\"book_deleted/), 'a payload that is not a book event is said on stderr')
    t.match(watch.out.stderr, /ignored a notification that is not a book event: "not json at all"/)
    t.equal(watch.out.stdout.split('\n').filter(Boolean).length, 1, 'and not printed as an event')

    const { rows: terminated } = await admin.query<{ ok: boolean }>(
      'SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()', [WATCH_APPLICATION_NAME])
    t.same(terminated, [{ ok: true }], "the watcher's one connection is terminated by the server")
    t.ok(await watch.waitFor('stderr', /^deliveries: connection lost \(57P01 terminating connection due to administrator command\): reconnecting in 0\.5 s$/m),
      `the loss is said on stderr\n${watch.out.stderr}`)
    t.ok(await watch.waitFor('stderr', /^deliveries: listening on book_events again \(events sent while disconnected are not replayed/m), 'and the reconnection')

    const failed = event({ event: 'job_failed', book_id: null, chapter_count: 0, webhook_id: null })
    await notify(failed)
    t.ok(await watch.waitFor('stdout', /job_failed/), 'events after the reconnection are printed')
    t.match(watch.out.stdout.split('\n')[1], new RegExp(`job_failed job=${failed.job_id} book=- user=show-user chapters=0$`))

    watch.child.kill('SIGINT')
    t.equal(await watch.exited, 0, 'SIGINT: exit 0')
    t.notMatch(watch.out.stderr, /\n\s+at /, 'no stack trace')
  })

  t.test('deliveries watch --json sees the service\'s own notifications, before and after a terminated connection; SIGINT exits 0', async (t) => {
    const watch = startWatch(['--json'])
    t.ok(await watch.waitFor('stderr', /listening on book_events/))
    const delivered = completedDelivery({ userId: 'show-user', chapters: 2 })
    const answer = await deliver(running.endpoint, delivered)
    t.equal(answer.status, 200)
    t.ok(await watch.waitFor('stdout', new RegExp(delivered.job_id)), 'the delivery is seen as it commits')
    const [line] = watch.out.stdout.split('\n').filter(Boolean).map((text) => JSON.parse(text) as BookEvent)
    t.match(line, { event: 'book_created', job_id: delivered.job_id, book_id: answer.body.bookId, user_id: 'show-user', chapter_count: 2 })

    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()', [WATCH_APPLICATION_NAME])
    t.ok(await watch.waitFor('stderr', /listening on book_events again/), 'it reconnects')
    const again = completedDelivery({ userId: 'show-user', chapters: 1 })
    t.equal((await deliver(running.endpoint, again)).status, 200)
    t.ok(await watch.waitFor('stdout', new RegExp(again.job_id)), 'a delivery after the reconnection is seen too')
    watch.child.kill('SIGINT')
    t.equal(await watch.exited, 0, 'SIGINT: exit 0')
  })

  t.test('deliveries watch --json: each payload as one JSON line; SIGTERM exits 0', async (t) => {
    const watch = startWatch(['--json'])
    t.ok(await watch.waitFor('stderr', /listening on book_events/))
    const updated = event({ event: 'book_updated', chapter_count: 12 })
    // Whitespace in the payload (another sender's formatting) still gives one line.
    await notify(JSON.stringify(updated, null, 2))
    t.ok(await watch.waitFor('stdout', /\n$/))
    t.same(watch.out.stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line)), [updated], 'the payload, one JSON line')
    watch.child.kill('SIGTERM')
    t.equal(await watch.exited, 0, 'SIGTERM: exit 0')
  })

  t.test('deliveries watch: an unreachable database at start is one line and exit 1', async (t) => {
    const watch = startWatch([], 'postgres://postgres@127.0.0.1:1/none')
    t.equal(await watch.exited, 1)
    t.equal(watch.out.stderr, 'deliveries failed: connect ECONNREFUSED 127.0.0.1:1\n')
  })
}
