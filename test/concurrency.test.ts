import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import t, { type Test } from 'tap'
import { completedDelivery, failedDelivery } from '../scripts/deliveries.ts'
import { count, createUser, deliver, freshDatabase, requiresPostgres, signedHeaders, startApp, testConfig, type RunningApp } from './helper.ts'

// Concurrent deliveries to one app, and to two apps on one database: each app has its own pool
// and connections, as two replicas (containers) have. Exactly once either way.
const databaseUrl = await freshDatabase(t)
const running = await startApp(t, testConfig(databaseUrl))
await createUser(running, 'u1')
/** The second replica, for the tests that need a Postgres server. */
const replica = (t: Test) => startApp(t, testConfig(databaseUrl))

t.test('50 concurrent deliveries of one new job to two replicas: all 200, one job, one book, 10 chapters', async (t) => {
  if (!(await requiresPostgres(t, 'concurrent deliveries over several connections'))) return
  const second = await replica(t)
  const delivery = completedDelivery({ userId: 'u1', chapters: 10 })
  const body = JSON.stringify(delivery)
  const answers = await Promise.all(Array.from({ length: 50 }, (_, i) =>
    deliver((i % 2 ? second : running).endpoint, body, signedHeaders(body))))

  t.same(answers.map((a) => a.status), Array(50).fill(200), 'every delivery is answered 200')
  t.equal(answers.filter((a) => a.body.created === true).length, 1, 'exactly one answer says created')
  t.equal(new Set(answers.map((a) => a.body.bookId)).size, 1, 'every answer names the same book')
  t.equal(await count(running, 'book_jobs', sql`id = ${delivery.job_id}`), 1)
  t.equal(await count(running, 'books', sql`job_id = ${delivery.job_id}`), 1)
  t.equal(await count(running, 'chapters', sql`book_id = ${answers[0]!.body.bookId as string}`), 10)
  const [job] = await running.query(sql`SELECT status FROM book_jobs WHERE id = ${delivery.job_id}`)
  t.equal(job?.status, 'COMPLETED')
})

/**
 * Concurrent re-deliveries of one job, each with its own chapter count and a mark in every
 * chapter, spread over `apps`: the stored chapters are one delivery's, once each, never a mix.
 */
async function redeliverConcurrently (t: Test, apps: RunningApp[], variety: { chapters: (i: number) => number, paragraphs?: number, generatedAt?: string }) {
  const jobId = randomUUID()
  const deliveries = Array.from({ length: 30 }, (_, i) => {
    const delivery = completedDelivery({ jobId, userId: 'u1', chapters: variety.chapters(i), paragraphs: variety.paragraphs, generatedAt: variety.generatedAt })
    delivery.book_data.chapters.forEach((chapter) => { chapter.content = `delivery ${i}: ${chapter.content}` })
    return delivery
  })
  const answers = await Promise.all(deliveries.map((delivery, i) => deliver(apps[i % apps.length]!.endpoint, delivery)))
  t.same(answers.map((a) => a.status), Array(30).fill(200), 'every delivery is acknowledged')
  t.equal(answers.filter((answer) => answer.body.created === true).length, 1, 'exactly one delivery created the book')
  t.equal(new Set(answers.map((answer) => answer.body.bookId)).size, 1, 'all answers name the same book')
  t.equal(await count(running, 'book_jobs', sql`id = ${jobId}`), 1)
  t.equal(await count(running, 'books', sql`job_id = ${jobId}`), 1)

  const chapters = await running.query<{ position: number, content: string }>(sql`
    SELECT c.position, c.content FROM chapters c JOIN books b ON b.id = c.book_id WHERE b.job_id = ${jobId} ORDER BY c.position`)
  const owners = new Set(chapters.map((chapter) => chapter.content.match(/^delivery (\d+):/)?.[1]))
  t.equal(owners.size, 1, 'all stored chapters come from one delivery')
  const winner = deliveries[Number([...owners][0])]!
  t.same(chapters.map((c) => c.position), winner.book_data.chapters.map((_, i) => i + 1), 'positions 1..n of that delivery, once each')
  t.same(chapters.map((c) => c.content), winner.book_data.chapters.map((c) => c.content))
}

t.test('concurrent re-deliveries with different chapters never mix two deliveries', async (t) => {
  if (!(await requiresPostgres(t, 'concurrent re-deliveries over several connections'))) return
  await redeliverConcurrently(t, [running], { chapters: (i) => 1 + (i % 12), paragraphs: 1 })
})

t.test('concurrent re-deliveries of one job through two replicas, one generated_at: one delivery\'s chapters, once', async (t) => {
  if (!(await requiresPostgres(t, 'two replicas behind one database keep exactly-once'))) return
  await redeliverConcurrently(t, [running, await replica(t)], { chapters: (i) => 2 + (i % 5), generatedAt: new Date().toISOString() })
})

t.test('distinct jobs spread over two replicas, each sent twice at once: one book each', async (t) => {
  if (!(await requiresPostgres(t, 'two replicas behind one database keep exactly-once'))) return
  const replicas = [running, await replica(t)]
  const deliveries = Array.from({ length: 20 }, () => completedDelivery({ userId: 'u1', chapters: 3 }))
  const answers = await Promise.all(deliveries.flatMap((delivery) => replicas.map((app) => deliver(app.endpoint, delivery))))
  t.ok(answers.every((answer) => answer.status === 200), 'all 40 acknowledged')
  const jobIds = deliveries.map((delivery) => delivery.job_id)
  const [row] = await running.query<{ books: number, chapters: number }>(sql`
    SELECT count(DISTINCT b.id)::int AS books, count(c.id)::int AS chapters
    FROM books b JOIN chapters c ON c.book_id = b.id WHERE b.job_id IN ${jobIds}`)
  t.same(row, { books: 20, chapters: 60 })
  for (const delivery of deliveries) {
    const created = answers.filter((answer) => answer.body.jobId === delivery.job_id && answer.body.created === true)
    if (created.length !== 1) t.fail(`job ${delivery.job_id}: ${created.length} deliveries say they created the book`)
  }
  t.pass('each job was created by exactly one of its two deliveries')
})

t.test('concurrent completed and failed deliveries of one new job end COMPLETED with the book', async (t) => {
  if (!(await requiresPostgres(t, 'concurrent completed/failed deliveries'))) return
  const jobId = randomUUID()
  const mixed = Array.from({ length: 20 }, (_, i) => i % 2
    ? failedDelivery(jobId, `failure ${i}`, 'u1')
    : completedDelivery({ jobId, userId: 'u1', chapters: 3 }))
  const answers = await Promise.all(mixed.map((delivery) => deliver(running.endpoint, delivery)))
  t.same(answers.map((a) => a.status), Array(20).fill(200))
  const [job] = await running.query(sql`SELECT status, error FROM book_jobs WHERE id = ${jobId}`)
  t.same(job, { status: 'COMPLETED', error: null }, 'never downgraded once completed')
  t.equal(await count(running, 'books', sql`job_id = ${jobId}`), 1)
})

t.test('retries of one delivery are idempotent: same book, same chapter ids', async (t) => {
  const delivery = completedDelivery({ userId: 'u1', chapters: 4 })
  const first = await deliver(running.endpoint, delivery)
  const ids = await running.query(sql`SELECT c.id FROM chapters c WHERE c.book_id = ${first.body.bookId as string} ORDER BY position`)
  for (let retry = 0; retry < 3; retry++) {
    const again = await deliver(running.endpoint, delivery)
    t.match(again.body, { bookId: first.body.bookId, created: false, chaptersCreated: 4 })
  }
  t.same(await running.query(sql`SELECT c.id FROM chapters c WHERE c.book_id = ${first.body.bookId as string} ORDER BY position`), ids)
  t.equal(await count(running, 'books', sql`job_id = ${delivery.job_id}`), 1)
})
