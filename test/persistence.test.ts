import { sql } from 'drizzle-orm'
import t from 'tap'
import { completedDelivery, failedDelivery } from '../scripts/deliveries.ts'
import { count, createUser, deliver, freshDatabase, snapshot, startApp, testConfig } from './helper.ts'

const databaseUrl = await freshDatabase(t)
const running = await startApp(t, testConfig(databaseUrl))
await createUser(running, 'user_clerkid_123')

interface ChapterRow { id: string, position: number, title: string, description: string, content: string, word_count: number }
const chaptersOf = (bookId: string) => running.query<ChapterRow>(sql`
  SELECT id, position, title, description, content, word_count FROM chapters WHERE book_id = ${bookId} ORDER BY position`)

t.test('a completed delivery creates the job, the book and its chapters byte for byte', async (t) => {
  const delivery = completedDelivery({ userId: 'user_clerkid_123' })
  const answer = await deliver(running.endpoint, delivery)
  t.equal(answer.status, 200)
  t.match(answer.body, { success: true, jobId: delivery.job_id, created: true, chaptersCreated: 10, wordCount: 15000 })
  t.type(answer.body.bookId, 'string')
  t.type(answer.body.processingTimeMs, 'number')

  const [job] = await running.query(sql`SELECT * FROM book_jobs WHERE id = ${delivery.job_id}`)
  t.match(job, { user_id: 'user_clerkid_123', job_type: 'BOOK_GENERATION', status: 'COMPLETED', error: null })
  t.ok(job?.completed_at, 'completed_at is set')
  t.same(job?.input_data, { title: delivery.book_data.book_title, topic: delivery.book_data.topic, goal: delivery.book_data.goal })

  const [book] = await running.query(sql`SELECT * FROM books WHERE job_id = ${delivery.job_id}`)
  t.match(book, {
    id: answer.body.bookId,
    user_id: 'user_clerkid_123',
    title: delivery.book_data.book_title,
    topic: delivery.book_data.topic,
    goal: delivery.book_data.goal,
    word_count: 15000,
    chapter_count: 10,
  })
  t.same(book?.outline, delivery.book_data.outline)
  t.equal(new Date(book?.generated_at as string).toISOString(), delivery.book_data.generated_at)

  const chapters = await chaptersOf(answer.body.bookId as string)
  t.equal(chapters.length, 10)
  chapters.forEach((chapter, i) => {
    const sent = delivery.book_data.chapters[i]!
    t.equal(chapter.position, i + 1)
    t.equal(chapter.title, sent.title)
    t.equal(chapter.description, sent.description)
    t.ok(Buffer.from(chapter.content, 'utf8').equals(Buffer.from(sent.content, 'utf8')), `chapter ${i + 1} content is byte-identical`)
    t.equal(chapter.word_count, sent.content.match(/\S+/g)!.length, 'chapters.word_count is counted by the service')
  })

  const lines = running.logs.filter((line) => line.msg === 'delivery' && line.jobId === delivery.job_id)
  t.equal(lines.length, 1, 'one log line per delivery')
  t.match(lines[0], { outcome: 'book_created', chapters: 10, processingTimeMs: Number })
  t.notOk(running.rawLogs().includes(delivery.book_data.chapters[0]!.content.slice(0, 40)), 'no book content in the logs')
})

t.test('a re-delivery updates the same book and replaces its chapters (10 → 3, then 3 → 5)', async (t) => {
  const first = completedDelivery({ userId: 'user_clerkid_123' })
  const created = await deliver(running.endpoint, first)
  const bookId = created.body.bookId as string
  const before = await chaptersOf(bookId)

  const shorter = completedDelivery({ jobId: first.job_id, chapters: 3, paragraphs: 1, userId: 'user_clerkid_123' })
  shorter.book_data.book_title = 'Titre révisé'
  const replaced = await deliver(running.endpoint, shorter)
  t.equal(replaced.status, 200)
  t.match(replaced.body, { bookId, created: false, chaptersCreated: 3 })
  t.equal(await count(running, 'books', sql`job_id = ${first.job_id}`), 1, 'never a second book')
  const after = await chaptersOf(bookId)
  t.same(after.map((c) => c.position), [1, 2, 3])
  t.same(after.map((c) => c.id), before.slice(0, 3).map((c) => c.id), 'remaining positions keep their ids')
  t.same(after.map((c) => c.content), shorter.book_data.chapters.map((c) => c.content), 'content is the new delivery\'s')
  const [book] = await running.query(sql`SELECT title, chapter_count FROM books WHERE id = ${bookId}`)
  t.same(book, { title: 'Titre révisé', chapter_count: 3 })

  const longer = completedDelivery({ jobId: first.job_id, chapters: 5, userId: 'user_clerkid_123' })
  const grown = await deliver(running.endpoint, longer)
  t.match(grown.body, { bookId, created: false, chaptersCreated: 5 })
  const final = await chaptersOf(bookId)
  t.same(final.map((c) => c.position), [1, 2, 3, 4, 5])
  t.same(final.slice(0, 3).map((c) => c.id), after.map((c) => c.id))
})

t.test('an existing PENDING job is reused and keeps its owner', async (t) => {
  await createUser(running, 'owner-a')
  await createUser(running, 'someone-else')
  const jobId = `pending-${Date.now()}`
  await running.query(sql`INSERT INTO book_jobs (id, user_id, status, input_data) VALUES (${jobId}, 'owner-a', 'PENDING', '{"title":"x"}')`)
  const answer = await deliver(running.endpoint, completedDelivery({ jobId, userId: 'someone-else' }))
  t.equal(answer.status, 200)
  t.equal(answer.body.created, true, 'the book is new even though the job is not')
  t.equal(await count(running, 'book_jobs', sql`id = ${jobId}`), 1)
  const [job] = await running.query(sql`SELECT user_id, status, input_data FROM book_jobs WHERE id = ${jobId}`)
  t.same(job, { user_id: 'owner-a', status: 'COMPLETED', input_data: { title: 'x' } })
  const [book] = await running.query(sql`SELECT user_id FROM books WHERE job_id = ${jobId}`)
  t.equal(book?.user_id, 'owner-a', 'the book belongs to the job\'s user')
  t.ok(running.logs.some((line) => line.jobId === jobId && line.payloadUserId === 'someone-else'), 'the other user_id is logged')
})

t.test('an older generated_at is an out-of-order retry: nothing changes', async (t) => {
  const newer = completedDelivery({ userId: 'user_clerkid_123', chapters: 4, generatedAt: '2025-10-20T10:23:34.861Z' })
  const created = await deliver(running.endpoint, newer)
  const before = await snapshot(running)
  const [bookBefore] = await running.query(sql`SELECT * FROM books WHERE job_id = ${newer.job_id}`)

  const older = completedDelivery({ jobId: newer.job_id, userId: 'user_clerkid_123', chapters: 2, generatedAt: '2025-10-20T09:00:00.000Z' })
  older.book_data.word_count = 7
  const answer = await deliver(running.endpoint, older)
  t.equal(answer.status, 200)
  t.match(answer.body, { bookId: created.body.bookId, created: false, chaptersCreated: 4, wordCount: 15000 })
  t.same(await snapshot(running), before)
  const [bookAfter] = await running.query(sql`SELECT * FROM books WHERE job_id = ${newer.job_id}`)
  t.same(bookAfter, bookBefore)
})

t.test('failed for a new job creates it FAILED with the error', async (t) => {
  const jobId = `failed-${Date.now()}`
  const answer = await deliver(running.endpoint, failedDelivery(jobId, 'CrewAI agent crashed', 'user_clerkid_123'))
  t.equal(answer.status, 200)
  t.match(answer.body, { success: true, jobId, bookId: null, created: true, chaptersCreated: 0, wordCount: null })
  const [job] = await running.query(sql`SELECT status, error, completed_at FROM book_jobs WHERE id = ${jobId}`)
  t.same(job, { status: 'FAILED', error: 'CrewAI agent crashed', completed_at: null })

  const again = await deliver(running.endpoint, failedDelivery(jobId, 'second failure', 'user_clerkid_123'))
  t.match(again.body, { created: false })
  const [updated] = await running.query(sql`SELECT status, error FROM book_jobs WHERE id = ${jobId}`)
  t.same(updated, { status: 'FAILED', error: 'second failure' })

  const completed = await deliver(running.endpoint, completedDelivery({ jobId, userId: 'user_clerkid_123' }))
  t.match(completed.body, { created: true })
  const [recovered] = await running.query(sql`SELECT status, error FROM book_jobs WHERE id = ${jobId}`)
  t.same(recovered, { status: 'COMPLETED', error: null }, 'a later completion upgrades a FAILED job')
})

t.test('failed after completed leaves the job COMPLETED and the book intact', async (t) => {
  const delivery = completedDelivery({ userId: 'user_clerkid_123', chapters: 3 })
  const created = await deliver(running.endpoint, delivery)
  const before = await snapshot(running)
  const [jobBefore] = await running.query(sql`SELECT * FROM book_jobs WHERE id = ${delivery.job_id}`)
  const answer = await deliver(running.endpoint, failedDelivery(delivery.job_id, 'late failure'))
  t.equal(answer.status, 200)
  t.match(answer.body, { bookId: created.body.bookId, created: false, chaptersCreated: 3, wordCount: 15000 })
  const [jobAfter] = await running.query(sql`SELECT * FROM book_jobs WHERE id = ${delivery.job_id}`)
  t.same(jobAfter, jobBefore, 'the job row is untouched')
  t.same(await snapshot(running), before)
})

t.test('sender figures are stored as sent; a mismatch is logged, not rejected', async (t) => {
  const delivery = completedDelivery({ userId: 'user_clerkid_123', chapters: 2 })
  delivery.book_data.chapter_count = 99
  delivery.book_data.word_count = 1
  const answer = await deliver(running.endpoint, delivery)
  t.equal(answer.status, 200)
  t.match(answer.body, { chaptersCreated: 2, wordCount: 1 })
  const [book] = await running.query(sql`SELECT word_count, chapter_count FROM books WHERE job_id = ${delivery.job_id}`)
  t.same(book, { word_count: 1, chapter_count: 99 })
  t.ok(running.logs.some((line) => line.jobId === delivery.job_id && line.senderChapterCount === 99 && line.chaptersSent === 2))
})
