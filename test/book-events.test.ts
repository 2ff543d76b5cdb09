import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import pg from 'pg'
import t, { type Test } from 'tap'
import { BOOK_EVENTS_CHANNEL, BookEventSchema, MAX_NOTIFICATION_BYTES, type BookEvent } from '../src/events/book-events.ts'
import { replayDeadLetter } from '../src/webhooks/dead-letters.ts'
import { LIMITS } from '../src/webhooks/payload.ts'
import { Value } from 'typebox/value'
import { completedDelivery, failedDelivery } from '../scripts/deliveries.ts'
import { createUser, deliver, freshDatabase, requiresPostgres, signedHeaders, startApp, testConfig, TEST_SECRET, type RunningApp } from './helper.ts'

// Contract section 5, "Notifications to readers": one `book_events` notification per delivery
// that changed the tables, sent only once the change is committed; none for anything else.

/** A reader as docs/DATA.md tells it to listen: a dedicated client, not a pool. */
async function listen (t: Test, databaseUrl: string) {
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  t.teardown(() => client.end())
  const events: BookEvent[] = []
  const raw: string[] = []
  const waiters: Array<() => void> = []
  client.on('notification', (message) => {
    if (message.channel !== BOOK_EVENTS_CHANNEL) return
    raw.push(message.payload ?? '')
    events.push(JSON.parse(message.payload ?? 'null') as BookEvent)
    waiters.splice(0).forEach((wake) => wake())
  })
  await client.query(`LISTEN ${BOOK_EVENTS_CHANNEL}`)
  return {
    client,
    events,
    raw,
    /** Resolves once `n` events in all have arrived (or rejects after `ms`). */
    async until (n: number, ms = 5_000): Promise<BookEvent[]> {
      const deadline = Date.now() + ms
      while (events.length < n) {
        if (Date.now() > deadline) throw new Error(`${events.length} of ${n} notifications after ${ms} ms`)
        await new Promise<void>((resolve) => { waiters.push(resolve); setTimeout(resolve, 50) })
      }
      return events.slice(0, n)
    },
    /** What arrived within `ms`: proves that nothing came. */
    async settle (ms = 400): Promise<BookEvent[]> {
      await new Promise((resolve) => setTimeout(resolve, ms))
      return [...events]
    },
  }
}

const databaseUrl = await freshDatabase(t)
const running = await startApp(t, testConfig(databaseUrl))
await createUser(running, 'reader-user')

async function jobRow (app: RunningApp, jobId: string) {
  const [row] = await app.query<{ user_id: string, book_id: string | null, chapters: number }>(sql`
    SELECT j.user_id, b.id AS book_id, (SELECT count(*)::int FROM chapters c WHERE c.book_id = b.id) AS chapters
    FROM book_jobs j LEFT JOIN books b ON b.job_id = j.id WHERE j.id = ${jobId}`)
  return row
}

t.test('one notification per created book, updated book and failed job, equal to the rows', async (t) => {
  if (!(await requiresPostgres(t, 'LISTEN needs a Postgres server'))) return
  const reader = await listen(t, databaseUrl!)

  const created = completedDelivery({ userId: 'reader-user', chapters: 3 })
  const createdAnswer = await deliver(running.endpoint, created)
  t.equal(createdAnswer.status, 200)
  const [first] = await reader.until(1)
  const row = await jobRow(running, created.job_id)
  t.same(first, {
    event: 'book_created',
    job_id: created.job_id,
    book_id: row!.book_id,
    user_id: 'reader-user',
    chapter_count: 3,
    webhook_id: createdAnswer.webhookId,
  })
  t.ok(Value.Check(BookEventSchema, first), 'the payload matches the exported schema')

  const updated = completedDelivery({ jobId: created.job_id, userId: 'reader-user', chapters: 5, generatedAt: new Date(Date.now() + 1000).toISOString() })
  t.equal((await deliver(running.endpoint, updated)).status, 200)
  const [, second] = await reader.until(2)
  t.match(second, { event: 'book_updated', job_id: created.job_id, book_id: row!.book_id, user_id: 'reader-user', chapter_count: 5 })
  t.equal((await jobRow(running, created.job_id))!.chapters, 5, 'chapter_count is the chapters stored now')

  const failedNew = failedDelivery(`failed-${randomUUID()}`, 'LLM quota exceeded', 'reader-user')
  t.equal((await deliver(running.endpoint, failedNew)).status, 200)
  const [, , third] = await reader.until(3)
  t.same(third && { ...third, webhook_id: typeof third.webhook_id }, {
    event: 'job_failed', job_id: failedNew.job_id, book_id: null, user_id: 'reader-user', chapter_count: 0, webhook_id: 'string',
  })

  // A job that failed earlier and exists without a book: failing it again changes it (error, time).
  const failedAgain = failedDelivery(failedNew.job_id, 'second failure', 'reader-user')
  t.equal((await deliver(running.endpoint, failedAgain)).status, 200)
  const [, , , fourth] = await reader.until(4)
  t.match(fourth, { event: 'job_failed', job_id: failedNew.job_id, book_id: null, chapter_count: 0 })
  t.equal((await reader.settle()).length, 4, 'exactly one notification per change')
})

t.test('none for a retry, an out-of-order retry, failed after completed, a 422, a 401 or a 400', async (t) => {
  if (!(await requiresPostgres(t, 'LISTEN needs a Postgres server'))) return
  const delivery = completedDelivery({ userId: 'reader-user', chapters: 2 })
  const first = await deliver(running.endpoint, delivery)
  t.equal(first.status, 200)

  const reader = await listen(t, databaseUrl!)
  const retry = await deliver(running.endpoint, delivery, signedHeaders(delivery, { id: first.webhookId }))
  t.equal(retry.status, 200, 'a retry (same webhook-id)')
  const older = completedDelivery({ jobId: delivery.job_id, userId: 'reader-user', generatedAt: '2020-01-01T00:00:00.000Z' })
  t.equal((await deliver(running.endpoint, older)).status, 200, 'an out-of-order retry')
  t.equal((await deliver(running.endpoint, failedDelivery(delivery.job_id, 'late failure', 'reader-user'))).status, 200, 'failed after completed')
  t.equal((await deliver(running.endpoint, completedDelivery({ userId: 'nobody-such' }))).status, 422, 'a dead letter')
  const unsigned = JSON.stringify(completedDelivery({ userId: 'reader-user' }))
  t.equal((await deliver(running.endpoint, unsigned, { 'content-type': 'application/json' })).status, 401, 'a rejected signature')
  t.equal((await deliver(running.endpoint, { ...completedDelivery({ userId: 'reader-user' }), status: 'done' })).status, 400, 'a malformed payload')
  t.same(await reader.settle(), [], 'no notification for anything that changed nothing')
})

t.test('a replayed dead letter that creates the book is announced once; replaying it again is not', async (t) => {
  if (!(await requiresPostgres(t, 'LISTEN needs a Postgres server'))) return
  const late = completedDelivery({ userId: 'late-reader', chapters: 2 })
  t.equal((await deliver(running.endpoint, late)).status, 422)
  const [letter] = await running.query<{ id: number }>(sql`SELECT id::int AS id FROM webhook_dead_letters WHERE job_id = ${late.job_id}`)
  await createUser(running, 'late-reader')
  const reader = await listen(t, databaseUrl!)
  const context = { defaultUserId: undefined, fallbackToOldestUser: false, log: running.app.log }
  t.match(await replayDeadLetter(running.app.db, letter!.id, context), { outcome: 'book_created' })
  t.match(await replayDeadLetter(running.app.db, letter!.id, context), { outcome: 'already_replayed' })
  const events = await reader.settle()
  t.same(events.map((event) => [event.event, event.job_id, event.user_id, event.chapter_count]), [['book_created', late.job_id, 'late-reader', 2]])
})

t.test('when a notification arrives, another connection already sees the book', async (t) => {
  if (!(await requiresPostgres(t, 'LISTEN needs a Postgres server'))) return
  const reader = await listen(t, databaseUrl!)
  const observer = new pg.Client({ connectionString: databaseUrl })
  await observer.connect()
  t.teardown(() => observer.end())
  const seen = new Promise<number>((resolve, reject) => {
    reader.client.once('notification', (message) => {
      const event = JSON.parse(message.payload!) as BookEvent
      observer.query('SELECT count(*)::int AS n FROM chapters WHERE book_id = $1', [event.book_id])
        .then((result) => resolve(result.rows[0].n as number), reject)
    })
  })
  t.equal((await deliver(running.endpoint, completedDelivery({ userId: 'reader-user', chapters: 4 }))).status, 200)
  t.equal(await seen, 4, 'the book and its 4 chapters are committed before the wake-up')
})

t.test('a delivery whose transaction fails at commit notifies no one', async (t) => {
  if (!(await requiresPostgres(t, 'LISTEN needs a Postgres server'))) return
  // A deferred constraint trigger fails the transaction at its commit, after every statement ran.
  await running.query(sql.raw(`
    CREATE FUNCTION refuse_marked_book() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.title = 'refused at commit' THEN RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'P0001'; END IF;
      RETURN NEW;
    END $$`))
  await running.query(sql.raw(`
    CREATE CONSTRAINT TRIGGER refuse_marked_book AFTER INSERT OR UPDATE ON books
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_marked_book()`))
  t.teardown(async () => {
    await running.query(sql.raw('DROP TRIGGER refuse_marked_book ON books'))
    await running.query(sql.raw('DROP FUNCTION refuse_marked_book()'))
  })

  const reader = await listen(t, databaseUrl!)
  const refused = completedDelivery({ userId: 'reader-user' })
  refused.book_data.book_title = 'refused at commit'
  t.equal((await deliver(running.endpoint, refused)).status, 500, 'a new job: its one statement fails at commit')

  const existing = completedDelivery({ userId: 'reader-user' })
  t.equal((await deliver(running.endpoint, existing)).status, 200)
  await reader.until(1)
  const redelivery = completedDelivery({ jobId: existing.job_id, userId: 'reader-user', generatedAt: new Date(Date.now() + 1000).toISOString() })
  redelivery.book_data.book_title = 'refused at commit'
  t.equal((await deliver(running.endpoint, redelivery)).status, 500, 'an existing job: its transaction fails at COMMIT')
  const events = await reader.settle()
  t.same(events.map((event) => event.job_id), [existing.job_id], 'only the committed delivery was announced')
  t.equal(await jobRow(running, refused.job_id), undefined, 'and nothing of the refused one is stored')
})

t.test('30 concurrent deliveries of 10 jobs: one notification per delivery that changed something', async (t) => {
  if (!(await requiresPostgres(t, 'LISTEN needs a Postgres server'))) return
  const reader = await listen(t, databaseUrl!)
  const jobs = Array.from({ length: 10 }, () => randomUUID())
  const base = Date.now()
  const deliveries = Array.from({ length: 30 }, (_, i) => i % 5 === 4
    ? failedDelivery(jobs[i % 10]!, `failure ${i}`, 'reader-user')
    : completedDelivery({ jobId: jobs[i % 10], userId: 'reader-user', chapters: 1 + (i % 4), paragraphs: 1, generatedAt: new Date(base + (i * 7919) % 30_000).toISOString() }))
  const before = running.logs.length
  const answers = await Promise.all(deliveries.map((delivery) => deliver(running.endpoint, delivery)))
  t.same(answers.map((answer) => answer.status), Array(30).fill(200))

  const outcomes = running.logs.slice(before).filter((line) => line.msg === 'delivery').map((line) => line.outcome as string)
  t.equal(outcomes.length, 30)
  const changed = outcomes.filter((outcome) => ['book_created', 'book_updated', 'job_failed'].includes(outcome))
  t.ok(changed.length >= 10 && changed.length < 30, `${changed.length} of 30 changed something (${[...new Set(outcomes)].join(', ')})`)
  const events = await reader.until(changed.length)
  t.equal((await reader.settle()).length, changed.length, 'no more notifications than changes')
  t.same(events.map((event) => event.event).sort(), [...changed].sort(), 'the same kinds of change')
  t.same(new Set(events.map((event) => event.job_id)), new Set(jobs), 'every job is announced')
})

t.test('the payload stays under the 8,000-byte limit at the largest ids and the most chapters', async (t) => {
  if (!(await requiresPostgres(t, 'LISTEN needs a Postgres server'))) return
  await createUser(running, '😊'.repeat(LIMITS.idLength))
  const reader = await listen(t, databaseUrl!)
  const delivery = completedDelivery({ userId: '😊'.repeat(LIMITS.idLength), chapters: LIMITS.chapters, paragraphs: 1 })
  delivery.job_id = `${'😊'.repeat(LIMITS.idLength - 36)}${randomUUID()}`
  const body = JSON.stringify(delivery)
  const answer = await deliver(running.endpoint, body, signedHeaders(body, { id: `msg_${'x'.repeat(1_000)}` }))
  t.equal(answer.status, 200)
  const [event] = await reader.until(1)
  t.equal(event?.chapter_count, LIMITS.chapters)
  const bytes = Buffer.byteLength(reader.raw[0]!)
  t.ok(bytes <= MAX_NOTIFICATION_BYTES, `${bytes} bytes`)
})

t.test('on the embedded database the service logs each event instead', async (t) => {
  const development = await startApp(t, testConfig(undefined, { environment: 'development', databaseUrl: undefined, webhookKeys: [] }, { WEBHOOK_SECRET: TEST_SECRET }))
  const delivery = completedDelivery({ chapters: 2 })
  const answer = await deliver(development.endpoint, JSON.stringify(delivery), { 'content-type': 'application/json' })
  t.equal(answer.status, 200)
  const logged = development.logs.filter((line) => line.msg.startsWith('book event'))
  t.equal(logged.length, 1, 'one line')
  t.match(logged[0], { level: 30, bookEvent: { event: 'book_created', job_id: delivery.job_id, book_id: answer.body.bookId, user_id: 'dev-user', chapter_count: 2, webhook_id: null } })
  t.notOk(JSON.stringify(logged[0]).includes('Chapitre'), 'no book text in it')
})
