import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import t from 'tap'
import { completedDelivery, failedDelivery } from './fixtures.ts'
import { count, createUser, deliver, freshDatabase, requiresPostgres, signedHeaders, startApp, testConfig } from './helper.ts'

const databaseUrl = await freshDatabase(t)
const running = await startApp(t, testConfig(databaseUrl))
await createUser(running, 'u1')

t.test('50 concurrent deliveries of one new job: all 200, one job, one book, 10 chapters', async (t) => {
  if (!(await requiresPostgres(t, 'concurrent deliveries over several connections'))) return
  // A second app on the same database stands for a second replica: its own pool, its own connections.
  const replica = await startApp(t, testConfig(databaseUrl))
  const delivery = completedDelivery({ userId: 'u1', chapters: 10 })
  const body = JSON.stringify(delivery)
  const answers = await Promise.all(Array.from({ length: 50 }, (_, i) =>
    deliver((i % 2 ? replica : running).endpoint, body, signedHeaders(body))))

  t.same(answers.map((a) => a.status), Array(50).fill(200), 'every delivery is answered 200')
  t.equal(answers.filter((a) => a.body.created === true).length, 1, 'exactly one answer says created')
  t.equal(new Set(answers.map((a) => a.body.bookId)).size, 1, 'every answer names the same book')
  t.equal(await count(running, 'book_jobs', sql`id = ${delivery.job_id}`), 1)
  t.equal(await count(running, 'books', sql`job_id = ${delivery.job_id}`), 1)
  t.equal(await count(running, 'chapters', sql`book_id = ${answers[0]!.body.bookId as string}`), 10)
  const [job] = await running.query(sql`SELECT status FROM book_jobs WHERE id = ${delivery.job_id}`)
  t.equal(job?.status, 'COMPLETED')
})

t.test('concurrent re-deliveries with different chapters never mix two deliveries', async (t) => {
  if (!(await requiresPostgres(t, 'concurrent re-deliveries over several connections'))) return
  const jobId = randomUUID()
  const deliveries = Array.from({ length: 30 }, (_, i) => {
    const delivery = completedDelivery({ jobId, userId: 'u1', chapters: 1 + (i % 12), paragraphs: 1 })
    delivery.book_data.chapters.forEach((chapter) => { chapter.content = `delivery ${i}: ${chapter.content}` })
    return delivery
  })
  const answers = await Promise.all(deliveries.map((delivery) => deliver(running.endpoint, delivery)))
  t.same(answers.map((a) => a.status), Array(30).fill(200))
  t.equal(await count(running, 'books', sql`job_id = ${jobId}`), 1)

  const chapters = await running.query<{ position: number, content: string }>(sql`
    SELECT c.position, c.content FROM chapters c JOIN books b ON b.id = c.book_id WHERE b.job_id = ${jobId} ORDER BY c.position`)
  const owners = new Set(chapters.map((chapter) => chapter.content.match(/^delivery (\d+):/)?.[1]))
  t.equal(owners.size, 1, 'all stored chapters come from one delivery')
  const winner = deliveries[Number([...owners][0])]!
  t.same(chapters.map((c) => c.position), winner.book_data.chapters.map((_, i) => i + 1), 'positions 1..n of that delivery')
  t.same(chapters.map((c) => c.content), winner.book_data.chapters.map((c) => c.content))
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
