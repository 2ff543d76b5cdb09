import { sql } from 'drizzle-orm'
import t from 'tap'
import { completedDelivery, failedDelivery } from '../scripts/deliveries.ts'
import { count, createUser, deliver, freshDatabase, startApp, testConfig } from './helper.ts'

const databaseUrl = await freshDatabase(t)
const production = await startApp(t, testConfig(databaseUrl))
await createUser(production, 'oldest-user', '2020-01-01T00:00:00Z')
await createUser(production, 'user_clerkid_123')

interface DeadLetterRow { webhook_id: string, job_id: string, reason: string, payload: unknown }
/** The owner of a job: every app here shares one database. */
async function ownerOf (jobId: string): Promise<unknown> {
  const [job] = await production.query(sql`SELECT user_id FROM book_jobs WHERE id = ${jobId}`)
  return job?.user_id
}
const deadLettersOf = (jobId: string) => production.query<DeadLetterRow>(sql`
  SELECT webhook_id, job_id, reason, payload FROM webhook_dead_letters WHERE job_id = ${jobId}`)

t.test('the payload user_id owns a new job and its book', async (t) => {
  const delivery = completedDelivery({ userId: 'user_clerkid_123', chapters: 1 })
  t.equal((await deliver(production.endpoint, delivery)).status, 200)
  t.equal(await ownerOf(delivery.job_id), 'user_clerkid_123')
})

t.test('an unknown user_id is 422 and the delivery is kept as a dead letter', async (t) => {
  const delivery = completedDelivery({ userId: 'ghost-user', chapters: 2 })
  const answer = await deliver(production.endpoint, delivery)
  t.equal(answer.status, 422)
  t.equal(answer.body.error, 'unprocessable_delivery')
  t.match(String(answer.body.message), /ghost-user/)
  t.equal(await count(production, 'book_jobs', sql`id = ${delivery.job_id}`), 0, 'no job')
  t.equal(await count(production, 'books', sql`job_id = ${delivery.job_id}`), 0, 'no book')
  const [letter] = await deadLettersOf(delivery.job_id)
  t.equal(letter?.webhook_id, answer.webhookId)
  t.match(letter?.reason, /ghost-user/)
  t.same(letter?.payload, delivery, 'the payload is stored as sent')
  t.notMatch(JSON.stringify(letter), /whsec_|v1,/, 'no secret or signature in the dead letter')
})

t.test('no user at all outside development is 422 (no oldest-user fallback)', async (t) => {
  const delivery = completedDelivery({ chapters: 1 })
  const answer = await deliver(production.endpoint, delivery)
  t.equal(answer.status, 422)
  t.match(String(answer.body.message), /no user/)
  t.equal(await count(production, 'book_jobs', sql`id = ${delivery.job_id}`), 0)
  t.equal((await deadLettersOf(delivery.job_id)).length, 1)
})

t.test('a failed delivery for a new job with an unknown user is dead-lettered too', async (t) => {
  const jobId = `failed-ghost-${Date.now()}`
  const answer = await deliver(production.endpoint, failedDelivery(jobId, 'boom', 'ghost-user'))
  t.equal(answer.status, 422)
  t.equal((await deadLettersOf(jobId)).length, 1)
})

t.test('an existing job keeps its owner even when the payload user is unknown', async (t) => {
  const jobId = `owned-${Date.now()}`
  await production.query(sql`INSERT INTO book_jobs (id, user_id, status) VALUES (${jobId}, 'user_clerkid_123', 'RUNNING')`)
  const answer = await deliver(production.endpoint, completedDelivery({ jobId, userId: 'ghost-user', chapters: 1 }))
  t.equal(answer.status, 200)
  const [book] = await production.query(sql`SELECT user_id FROM books WHERE job_id = ${jobId}`)
  t.equal(book?.user_id, 'user_clerkid_123')
})

t.test('DEFAULT_USER_ID owns payloads without user_id; the payload user_id wins over it', async (t) => {
  const withDefault = await startApp(t, testConfig(databaseUrl, { defaultUserId: 'user_clerkid_123' }))
  const anonymous = completedDelivery({ chapters: 1 })
  t.equal((await deliver(withDefault.endpoint, anonymous)).status, 200)
  t.equal(await ownerOf(anonymous.job_id), 'user_clerkid_123')

  const explicit = completedDelivery({ chapters: 1, userId: 'oldest-user' })
  t.equal((await deliver(withDefault.endpoint, explicit)).status, 200)
  t.equal(await ownerOf(explicit.job_id), 'oldest-user')

  const missingDefault = await startApp(t, testConfig(databaseUrl, { defaultUserId: 'nobody-here' }))
  const answer = await deliver(missingDefault.endpoint, completedDelivery({ chapters: 1 }))
  t.equal(answer.status, 422)
  t.match(String(answer.body.message), /nobody-here/)
})

t.test('in development only, a payload without user falls back to the oldest user', async (t) => {
  const development = await startApp(t, testConfig(databaseUrl, { environment: 'development' }))
  const delivery = completedDelivery({ chapters: 1 })
  t.equal((await deliver(development.endpoint, delivery)).status, 200)
  t.equal(await ownerOf(delivery.job_id), 'oldest-user')
})
