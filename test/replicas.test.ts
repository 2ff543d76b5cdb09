import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { completedDelivery } from '../scripts/deliveries.ts'
import { deliver, freshDatabase, requiresPostgres, signedHeaders, TEST_SECRET } from './helper.ts'
import { spawnServer } from './support/process.ts'
import { adminQuery } from './support/postgres.ts'

/**
 * Two server processes (what production runs: `src/server.ts`, ENVIRONMENT=production) on one
 * database, sent concurrent deliveries of the same and of different jobs: exactly once everywhere.
 */
interface Replica { endpoint: string, logs: () => string[] }

async function startReplica (t: Test, databaseUrl: string): Promise<Replica> {
  const server = await spawnServer(t, process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: { ...process.env, ENVIRONMENT: 'production', DATABASE_URL: databaseUrl, WEBHOOK_SECRET: TEST_SECRET, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info' },
  })
  return { endpoint: `${server.url}${BOOK_COMPLETION_PATH}`, logs: () => server.output().split('\n').filter(Boolean) }
}

t.test('two replicas, concurrent deliveries of the same and of different jobs: exactly once', async (t) => {
  if (!(await requiresPostgres(t, 'replicas share one Postgres server'))) return
  const databaseUrl = (await freshDatabase(t))!
  await adminQuery('INSERT INTO users (id) VALUES (\'replica-user\')', databaseUrl)
  const replicas = await Promise.all([startReplica(t, databaseUrl), startReplica(t, databaseUrl)])

  const run = randomUUID().slice(0, 8)
  interface Send { jobId: string, body: string, id: string, replica: number, group: string }
  const sends: Send[] = []
  // The same delivery six times per job: three retries under one webhook-id, three under new ids.
  for (let j = 0; j < 8; j++) {
    const body = JSON.stringify(completedDelivery({ jobId: `same-${run}-${j}`, userId: 'replica-user', chapters: 5 }))
    const retryId = `msg_${randomUUID()}`
    for (let k = 0; k < 6; k++) sends.push({ jobId: `same-${run}-${j}`, body, id: k < 3 ? retryId : `msg_${randomUUID()}`, replica: k % 2, group: 'same' })
  }
  // Four different contents per job (same generated_at), raced across the replicas.
  const generatedAt = new Date().toISOString()
  for (let j = 0; j < 8; j++) {
    for (let k = 0; k < 4; k++) {
      const delivery = completedDelivery({ jobId: `conflict-${run}-${j}`, userId: 'replica-user', chapters: 2 + k, generatedAt })
      delivery.book_data.chapters.forEach((chapter) => { chapter.content = `version ${k}: ${chapter.content}` })
      sends.push({ jobId: delivery.job_id, body: JSON.stringify(delivery), id: `msg_${randomUUID()}`, replica: k % 2, group: 'conflict' })
    }
  }
  // Different jobs, one delivery each.
  for (let j = 0; j < 16; j++) {
    sends.push({ jobId: `single-${run}-${j}`, body: JSON.stringify(completedDelivery({ jobId: `single-${run}-${j}`, userId: 'replica-user', chapters: 3 })), id: `msg_${randomUUID()}`, replica: j % 2, group: 'single' })
  }

  const answers = await Promise.all(sends.map((send) => deliver(replicas[send.replica]!.endpoint, send.body, signedHeaders(send.body, { id: send.id }))))
  t.same([...new Set(answers.map((answer) => answer.status))], [200], 'every delivery answered 200')
  t.same([0, 1].map((replica) => sends.filter((send, i) => send.replica === replica && answers[i]!.status === 200).length > 0), [true, true], 'both replicas served deliveries')

  const jobIds = [...new Set(sends.map((send) => send.jobId))]
  const createdPerJob = jobIds.map((jobId) => answers.filter((answer, i) => sends[i]!.jobId === jobId && answer.body.created === true).length)
  t.same([...new Set(createdPerJob)], [1], 'exactly one response per job says created')

  const [totals] = await adminQuery(`
    SELECT (SELECT count(*)::int FROM book_jobs) AS jobs, (SELECT count(*)::int FROM books) AS books,
      (SELECT count(*)::int FROM chapters) AS chapters, (SELECT count(*)::int FROM webhook_dead_letters) AS dead_letters,
      (SELECT count(*)::int FROM (SELECT book_id, position FROM chapters GROUP BY 1, 2 HAVING count(*) > 1) d) AS duplicated_positions`, databaseUrl)
  const perJob = await adminQuery<{ id: string, status: string, books: number, contents: string[], last_applied_id: string }>(`
    SELECT j.id, j.status::text AS status, j.applied_webhook_ids[cardinality(j.applied_webhook_ids)] AS last_applied_id, (SELECT count(*)::int FROM books b WHERE b.job_id = j.id) AS books,
      (SELECT array_agg(c.content ORDER BY c.position) FROM chapters c JOIN books b ON b.id = c.book_id WHERE b.job_id = j.id) AS contents
    FROM book_jobs j ORDER BY j.id`, databaseUrl)

  const expectedChapters = perJob.reduce((sum, job) => sum + job.contents.length, 0)
  t.same(totals, { jobs: 32, books: 32, chapters: expectedChapters, dead_letters: 0, duplicated_positions: 0 })
  t.equal(perJob.filter((job) => job.id.startsWith('same-')).reduce((sum, job) => sum + job.contents.length, 0), 8 * 5)
  t.equal(perJob.filter((job) => job.id.startsWith('single-')).reduce((sum, job) => sum + job.contents.length, 0), 16 * 3)
  for (const job of perJob) {
    const candidates = sends.filter((send) => send.jobId === job.id)
    const winner = candidates.find((send) => send.id === job.last_applied_id)
    const expected = winner && (JSON.parse(winner.body) as ReturnType<typeof completedDelivery>).book_data.chapters.map((chapter) => chapter.content)
    if (job.status !== 'COMPLETED' || job.books !== 1 || JSON.stringify(job.contents) !== JSON.stringify(expected)) {
      t.fail(`job ${job.id}: ${job.status}, ${job.books} books, chapters are not exactly the last applied delivery's`)
    }
  }
  t.pass(`all ${perJob.length} jobs hold exactly one book with the chapters of one delivery`)

  const outcomes: Record<string, number> = {}
  for (const line of replicas.flatMap((replica) => replica.logs())) {
    const parsed = JSON.parse(line) as { msg?: string, outcome?: string, level?: number }
    if (parsed.msg === 'delivery') outcomes[parsed.outcome!] = (outcomes[parsed.outcome!] ?? 0) + 1
    if ((parsed.level ?? 0) >= 50) t.fail(`a replica logged an error: ${line}`)
  }
  t.equal(Object.values(outcomes).reduce((a, b) => a + b, 0), sends.length, 'one log line per delivery')
  t.comment(`replica figures: ${JSON.stringify({ requests: sends.length, perReplica: [0, 1].map((r) => sends.filter((s) => s.replica === r).length), ...totals, outcomes })}`)
})
