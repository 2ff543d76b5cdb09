import { sql } from 'drizzle-orm'
import t from 'tap'
import { completedDelivery } from './fixtures.ts'
import { count, createUser, deliver, freshDatabase, requiresPostgres, startApp, testConfig, type RunningApp } from './helper.ts'

// Two replicas: two apps with their own pools on one database, as two containers would be.
const databaseUrl = await freshDatabase(t)
if (await requiresPostgres(t, 'two replicas behind one database keep exactly-once')) {
  const replicas = [await startApp(t, testConfig(databaseUrl)), await startApp(t, testConfig(databaseUrl))]
  const [first] = replicas as [RunningApp, RunningApp]
  await createUser(first, 'user_clerkid_123')

  t.test('concurrent re-deliveries of one job through both replicas leave one delivery\'s chapters, once', async (t) => {
    const jobId = `replicas-${Date.now()}`
    const generatedAt = new Date().toISOString()
    // Every delivery has its own chapter count and a marker in every chapter: a mix would show.
    const deliveries = Array.from({ length: 30 }, (_, i) => {
      const delivery = completedDelivery({ jobId, userId: 'user_clerkid_123', chapters: 2 + (i % 5), generatedAt })
      delivery.book_data.chapters.forEach((chapter) => { chapter.content += `\nmarker-${i}` })
      return delivery
    })
    const answers = await Promise.all(deliveries.map((delivery, i) => deliver(replicas[i % 2]!.endpoint, delivery)))
    t.same(answers.map((answer) => answer.status), answers.map(() => 200), 'every delivery is acknowledged')
    t.equal(answers.filter((answer) => answer.body.created === true).length, 1, 'exactly one delivery created the book')
    t.equal(new Set(answers.map((answer) => answer.body.bookId)).size, 1, 'all answers name the same book')

    t.equal(await count(first, 'book_jobs', sql`id = ${jobId}`), 1)
    t.equal(await count(first, 'books', sql`job_id = ${jobId}`), 1)
    const chapters = await first.query<{ position: number, content: string }>(sql`
      SELECT c.position, c.content FROM chapters c JOIN books b ON b.id = c.book_id WHERE b.job_id = ${jobId} ORDER BY c.position`)
    const markers = new Set(chapters.map((chapter) => /marker-(\d+)$/.exec(chapter.content)?.[1]))
    t.equal(markers.size, 1, 'the chapters come from one delivery, not a mix')
    const winner = deliveries[Number([...markers][0])]!
    t.same(chapters.map((chapter) => chapter.position), winner.book_data.chapters.map((_, i) => i + 1), 'its positions, once each')
  })

  t.test('distinct jobs spread over both replicas, each sent twice at once: one book each', async (t) => {
    const deliveries = Array.from({ length: 20 }, () => completedDelivery({ userId: 'user_clerkid_123', chapters: 3 }))
    const answers = await Promise.all(deliveries.flatMap((delivery) => [
      deliver(replicas[0]!.endpoint, delivery),
      deliver(replicas[1]!.endpoint, delivery),
    ]))
    t.ok(answers.every((answer) => answer.status === 200), 'all 40 acknowledged')
    const jobIds = deliveries.map((delivery) => delivery.job_id)
    const [row] = await first.query<{ books: number, chapters: number }>(sql`
      SELECT count(DISTINCT b.id)::int AS books, count(c.id)::int AS chapters
      FROM books b JOIN chapters c ON c.book_id = b.id WHERE b.job_id IN ${jobIds}`)
    t.same(row, { books: 20, chapters: 60 })
    for (const delivery of deliveries) {
      const created = answers.filter((answer) => answer.body.jobId === delivery.job_id && answer.body.created === true)
      if (created.length !== 1) t.fail(`job ${delivery.job_id}: ${created.length} deliveries say they created the book`)
    }
    t.pass('each job was created by exactly one of its two deliveries')
  })
}
