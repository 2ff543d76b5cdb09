import { sql } from 'drizzle-orm'
import t from 'tap'
import { request } from 'undici'
import { findPgbouncer, startPgbouncer } from './support/pgbouncer.ts'
import { completedDelivery, failedDelivery } from '../scripts/deliveries.ts'
import { count, createUser, deliver, freshDatabase, requiresPostgres, startApp, testConfig } from './helper.ts'

// The service behind PgBouncer in transaction pooling mode: each transaction may run on another
// server connection, so nothing may outlive a transaction (named prepared statements do, unless
// PgBouncer >= 1.21 tracks them: DATABASE_PREPARED_STATEMENTS=false turns them off).
const databaseUrl = await freshDatabase(t)
const binary = findPgbouncer()
if (!binary) {
  t.test('the service works through PgBouncer (transaction pooling)', {
    skip: 'pgbouncer is not installed: apt-get install -y pgbouncer (Debian), as .ci/run does',
  }, () => {})
} else if (await requiresPostgres(t, 'the service works through PgBouncer (transaction pooling)')) {
  // A small server pool, so that transactions of one client really do move between server connections.
  const pgbouncer = await startPgbouncer(databaseUrl!, { poolSize: 3 })
  t.teardown(() => pgbouncer.stop())
  t.comment(`PgBouncer ${pgbouncer.version} (${binary})`)
  const running = await startApp(t, testConfig(pgbouncer.urlFor(databaseUrl!), { preparedStatements: false }))
  await createUser(running, 'user_clerkid_123')

  t.test('deliveries, re-deliveries and failures are applied through PgBouncer', async (t) => {
    const ready = await request(`${running.url}/ready`)
    t.equal(ready.statusCode, 200, '/ready answers through PgBouncer')
    await ready.body.dump()

    const delivery = completedDelivery({ userId: 'user_clerkid_123', chapters: 4 })
    const created = await deliver(running.endpoint, delivery)
    t.match(created, { status: 200, body: { created: true, chaptersCreated: 4 } })
    const shorter = completedDelivery({ jobId: delivery.job_id, userId: 'user_clerkid_123', chapters: 2 })
    t.match(await deliver(running.endpoint, shorter), { status: 200, body: { created: false, chaptersCreated: 2 } })
    t.equal(await count(running, 'chapters', sql`book_id = ${created.body.bookId}`), 2)

    const failed = await deliver(running.endpoint, failedDelivery(`pgb-failed-${Date.now()}`, 'boom', 'user_clerkid_123'))
    t.match(failed, { status: 200, body: { created: true } })
    const unknownUser = await deliver(running.endpoint, completedDelivery({ userId: 'nobody' }))
    t.equal(unknownUser.status, 422, 'a dead letter is written through PgBouncer too')
  })

  t.test('many concurrent deliveries, more clients than server connections, keep exactly-once', async (t) => {
    const jobId = `pgb-concurrent-${Date.now()}`
    const generatedAt = new Date().toISOString()
    const sameJob = Array.from({ length: 20 }, () => completedDelivery({ jobId, userId: 'user_clerkid_123', chapters: 3, generatedAt }))
    const otherJobs = Array.from({ length: 20 }, () => completedDelivery({ userId: 'user_clerkid_123', chapters: 2 }))
    const answers = await Promise.all([...sameJob, ...otherJobs].map((delivery) => deliver(running.endpoint, delivery)))
    t.ok(answers.every((answer) => answer.status === 200), 'all 40 acknowledged')
    t.equal(answers.slice(0, 20).filter((answer) => answer.body.created === true).length, 1, 'one delivery created the shared job\'s book')
    t.equal(await count(running, 'books', sql`job_id = ${jobId}`), 1)
    const [shared] = await running.query<{ n: number }>(sql`
      SELECT count(*)::int AS n FROM chapters c JOIN books b ON b.id = c.book_id WHERE b.job_id = ${jobId}`)
    t.equal(shared?.n, 3)
    const ids = otherJobs.map((delivery) => delivery.job_id)
    t.equal(await count(running, 'books', sql`job_id IN ${ids}`), 20)
  })
}
