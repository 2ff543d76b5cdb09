import { sql } from 'drizzle-orm'
import t from 'tap'
import type { CompletedDelivery } from '../src/webhooks/payload.ts'
import { completedDelivery, failedDelivery } from '../scripts/deliveries.ts'
import { createUser, deliver, freshDatabase, signedHeaders, snapshot, startApp, testConfig } from './helper.ts'

/**
 * Replay protection beyond the timestamp: a delivery whose webhook-id was already applied to its
 * job is answered 200 and rewrites nothing, even re-signed with a fresh timestamp inside the
 * tolerance window (what a captured request replayed by an attacker, or a sender's retry, looks like).
 */
const running = await startApp(t, testConfig(await freshDatabase(t)))
await createUser(running, 'replay-user')

/** Everything a rewrite would touch, updated_at and every chapter row included. */
async function state (jobId: string) {
  const [job] = await running.query(sql`SELECT *, updated_at::text AS updated_exact FROM book_jobs WHERE id = ${jobId}`)
  const [book] = await running.query(sql`SELECT *, updated_at::text AS updated_exact FROM books WHERE job_id = ${jobId}`)
  const chapters = await running.query(sql`
    SELECT c.* FROM chapters c JOIN books b ON b.id = c.book_id WHERE b.job_id = ${jobId} ORDER BY c.position`)
  return { job, book, chapters }
}

/**
 * `earlier`, then `later` (the same job), then `earlier` again under its own webhook-id, re-signed:
 * the state of the job just before that replay, and the replay's answer.
 */
async function replayEarlier (earlier: CompletedDelivery, later: CompletedDelivery) {
  const first = await deliver(running.endpoint, earlier)
  await deliver(running.endpoint, later)
  const before = await state(earlier.job_id)
  await new Promise((resolve) => setTimeout(resolve, 20))
  const replayed = await deliver(running.endpoint, earlier, signedHeaders(earlier, { id: first.webhookId }))
  return { before, replayed }
}

const outcomes = (jobId: string) => running.logs.filter((line) => line.msg === 'delivery' && line.jobId === jobId).map((line) => line.outcome)

t.test('the same webhook-id, re-signed with a fresh timestamp inside the window, changes nothing', async (t) => {
  const delivery = completedDelivery({ userId: 'replay-user', chapters: 3 })
  const body = JSON.stringify(delivery)
  const first = await deliver(running.endpoint, body, signedHeaders(body, { at: new Date(Date.now() - 200_000) }))
  t.equal(first.status, 200)
  t.equal(first.body.created, true)
  const before = await state(delivery.job_id)
  const counts = await snapshot(running)
  // now() inside a later transaction would differ: wait so any rewrite shows in updated_at.
  await new Promise((resolve) => setTimeout(resolve, 20))

  const replayed = await deliver(running.endpoint, body, signedHeaders(body, { id: first.webhookId }))
  t.equal(replayed.status, 200)
  t.match(replayed.body, { success: true, jobId: delivery.job_id, bookId: first.body.bookId, created: false, chaptersCreated: 3, wordCount: 15000 })
  t.same(await state(delivery.job_id), before, 'job, book and chapters unchanged, updated_at included')
  t.same(await snapshot(running), counts)
  t.same(outcomes(delivery.job_id), ['book_created', 'duplicate_ignored'])
})

t.test('the exact captured request (same timestamp and signature) replayed in the window changes nothing', async (t) => {
  const delivery = completedDelivery({ userId: 'replay-user', chapters: 2 })
  const body = JSON.stringify(delivery)
  const captured = signedHeaders(body)
  const first = await deliver(running.endpoint, body, captured)
  const before = await state(delivery.job_id)
  await new Promise((resolve) => setTimeout(resolve, 20))
  const replayed = await deliver(running.endpoint, body, captured)
  t.equal(first.status, 200)
  t.equal(replayed.status, 200)
  t.equal(replayed.body.created, false)
  t.same(await state(delivery.job_id), before)
})

t.test('a changed body under an already applied webhook-id is ignored too', async (t) => {
  const delivery = completedDelivery({ userId: 'replay-user', chapters: 2 })
  const first = await deliver(running.endpoint, delivery)
  const before = await state(delivery.job_id)
  const altered = completedDelivery({ jobId: delivery.job_id, userId: 'replay-user', chapters: 5 })
  altered.book_data.book_title = 'Titre remplacé'
  const replayed = await deliver(running.endpoint, altered, signedHeaders(altered, { id: first.webhookId }))
  t.equal(replayed.status, 200)
  t.match(replayed.body, { created: false, chaptersCreated: 2 })
  t.same(await state(delivery.job_id), before)
})

t.test('a replayed failure does not touch the job again', async (t) => {
  const jobId = `replay-failed-${Date.now()}`
  const body = JSON.stringify(failedDelivery(jobId, 'first failure', 'replay-user'))
  const first = await deliver(running.endpoint, body)
  const before = await state(jobId)
  await new Promise((resolve) => setTimeout(resolve, 20))
  const replayed = await deliver(running.endpoint, body, signedHeaders(body, { id: first.webhookId }))
  t.equal(replayed.status, 200)
  t.match(replayed.body, { created: false, bookId: null })
  t.same(await state(jobId), before)
  t.same(outcomes(jobId), ['job_failed', 'duplicate_ignored'])
})

t.test('an older applied webhook-id (not the last one) replayed is a duplicate: nothing rewritten', async (t) => {
  const older = completedDelivery({ userId: 'replay-user', chapters: 2, generatedAt: '2025-10-20T09:00:00.000Z' })
  const newer = completedDelivery({ jobId: older.job_id, userId: 'replay-user', chapters: 4, generatedAt: '2025-10-20T10:00:00.000Z' })
  const { before, replayed } = await replayEarlier(older, newer)
  t.equal(replayed.status, 200)
  t.match(replayed.body, { created: false, chaptersCreated: 4 })
  t.same(await state(older.job_id), before)
  t.same(outcomes(older.job_id), ['book_created', 'book_updated', 'duplicate_ignored'])
})

t.test('a new webhook-id with newer content is applied (protection does not block real updates)', async (t) => {
  const delivery = completedDelivery({ userId: 'replay-user', chapters: 2, generatedAt: '2025-10-20T09:00:00.000Z' })
  await deliver(running.endpoint, delivery)
  const before = await state(delivery.job_id)
  await new Promise((resolve) => setTimeout(resolve, 20))
  const update = completedDelivery({ jobId: delivery.job_id, userId: 'replay-user', chapters: 3, generatedAt: '2025-10-20T11:00:00.000Z' })
  const answer = await deliver(running.endpoint, update)
  t.equal(answer.status, 200)
  const after = await state(delivery.job_id)
  t.not(after.book?.updated_exact, before.book?.updated_exact, 'updated_at moves when something is rewritten')
  t.equal(after.chapters.length, 3)
})

t.test('outside the tolerance window a replay is refused before anything is read', async (t) => {
  const delivery = completedDelivery({ userId: 'replay-user' })
  const first = await deliver(running.endpoint, delivery)
  const counts = await snapshot(running)
  const stale = await deliver(running.endpoint, delivery, signedHeaders(delivery, { id: first.webhookId, at: new Date(Date.now() - 301_000) }))
  t.equal(stale.status, 401)
  t.same(stale.body, { error: 'invalid_signature', message: 'webhook-timestamp is too old' })
  t.same(await snapshot(running), counts)
})

// Every applied webhook-id of a job is remembered (book_jobs.applied_webhook_ids, the latest 64),
// not only the last: an earlier delivery replayed after a later one changes nothing either.
t.test('an earlier applied failure re-sent after a later one does not bring its error back', async (t) => {
  const jobId = `replay-gap-failed-${Date.now()}`
  const first = await deliver(running.endpoint, failedDelivery(jobId, 'first error', 'replay-user'))
  await deliver(running.endpoint, failedDelivery(jobId, 'second error', 'replay-user'))
  const before = await state(jobId)
  await new Promise((resolve) => setTimeout(resolve, 20))
  const resent = failedDelivery(jobId, 'first error', 'replay-user')
  const replay = await deliver(running.endpoint, resent, signedHeaders(resent, { id: first.webhookId }))
  t.equal(replay.status, 200)
  t.same(await state(jobId), before)
})

t.test('an earlier applied book re-sent after a later one with the same generated_at does not replace it', async (t) => {
  const earlier = completedDelivery({ userId: 'replay-user', chapters: 2, generatedAt: '2025-10-20T10:00:00.000Z' })
  const later = completedDelivery({ jobId: earlier.job_id, userId: 'replay-user', chapters: 3, generatedAt: '2025-10-20T10:00:00.000Z' })
  const { before, replayed } = await replayEarlier(earlier, later)
  t.equal(replayed.status, 200)
  t.same(await state(earlier.job_id), before)
})

t.test('a job remembers the latest 64 applied webhook-ids', async (t) => {
  const jobId = `replay-window-${Date.now()}`
  const ids: string[] = []
  for (let i = 0; i < 66; i++) {
    const sent = await deliver(running.endpoint, failedDelivery(jobId, `error ${i}`, 'replay-user'))
    t.equal(sent.status, 200)
    ids.push(sent.webhookId!)
  }
  const [job] = await running.query<{ applied: string[], last: string }>(sql`
    SELECT applied_webhook_ids AS applied, applied_webhook_ids[cardinality(applied_webhook_ids)] AS last FROM book_jobs WHERE id = ${jobId}`)
  t.same(job?.applied, ids.slice(-64), 'the latest 64, oldest first')
  t.equal(job?.last, ids.at(-1), 'the last one applied is last')
})
