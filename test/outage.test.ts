import { sql } from 'drizzle-orm'
import pg from 'pg'
import pino from 'pino'
import t from 'tap'
import { classifyDatabaseError } from '../src/errors.ts'
import { openDatabase } from '../src/db/client.ts'
import { completedDelivery } from '../scripts/deliveries.ts'
import { deliver, freshDatabase, get, requiresPostgres, startApp, testConfig, waitFor, type Answer, type RunningApp } from './helper.ts'
import { TcpProxy, type Outage } from './support/tcp-proxy.ts'

/** "Within a few seconds": the pool's connect timeout is 3 s, the readiness ping's 2 s. */
const ANSWER_WITHIN_MS = 5_000
const RECOVER_WITHIN_MS = 10_000

if (await requiresPostgres(t, 'losing the database at run time')) {
  const databaseUrl = (await freshDatabase(t))!
  const direct = new URL(databaseUrl)
  const proxy = new TcpProxy({ host: direct.hostname, port: Number(direct.port || 5432) })
  const proxied = new URL(databaseUrl)
  proxied.port = String(await proxy.start())
  t.teardown(() => proxy.stop())

  const admin = new pg.Client({ connectionString: databaseUrl })
  await admin.connect()
  t.teardown(() => admin.end())
  await admin.query("INSERT INTO users (id) VALUES ('outage-user')")

  const running = await startApp(t, testConfig(proxied.toString()))
  /** Every job a 200 acknowledged: each must be committed. */
  const acknowledged: string[] = []

  async function send (): Promise<Answer & { ms: number }> {
    const delivery = completedDelivery({ userId: 'outage-user', chapters: 4 })
    const started = Date.now()
    const answer = await deliver(running.endpoint, delivery)
    if (answer.status === 200) acknowledged.push(delivery.job_id)
    return { ...answer, ms: Date.now() - started }
  }

  /** `workers` senders delivering one after another until stopped; resolves with every answer. */
  function keepDelivering (workers: number) {
    const state = { delivering: true }
    const answers: Array<Answer & { ms: number }> = []
    const loops = Array.from({ length: workers }, async () => {
      while (state.delivering) answers.push(await send())
    })
    return {
      stop: async () => {
        state.delivering = false
        await Promise.all(loops)
        return answers
      },
    }
  }

  t.test('before the outage deliveries succeed', async (t) => {
    t.equal((await send()).status, 200)
    t.equal((await probe(running, '/ready')).status, 200)
  })

  for (const outage of ['refused', 'silent'] as Outage[]) {
    t.test(`database ${outage}: 503 + Retry-After, /ready 503, /health 200, then recovery without restart`, async (t) => {
      // Senders keep delivering through the outage: some deliveries lose their connection mid-transaction.
      const traffic = keepDelivering(4)
      await new Promise((resolve) => setTimeout(resolve, 300))
      await proxy.cut(outage)

      const [during, ready, health] = await Promise.all([send(), probe(running, '/ready'), probe(running, '/health')])
      t.equal(during.status, 503, 'a delivery during the outage is 503')
      t.equal(during.headers['retry-after'], '5', 'with Retry-After')
      t.same(during.body, { error: 'database_unavailable', message: 'the database is unavailable; retry later' })
      t.ok(during.ms < ANSWER_WITHIN_MS, `answered in ${during.ms} ms`)
      t.equal(ready.status, 503, '/ready is 503')
      t.ok(ready.ms < ANSWER_WITHIN_MS, `/ready answered in ${ready.ms} ms`)
      t.equal(health.status, 200, '/health stays 200')

      await proxy.restore()
      const started = Date.now()
      let after = await send()
      while (after.status !== 200 && Date.now() - started < RECOVER_WITHIN_MS) {
        await new Promise((resolve) => setTimeout(resolve, 200))
        after = await send()
      }
      t.equal(after.status, 200, `deliveries succeed again ${Date.now() - started} ms after the database returned`)
      t.equal((await probe(running, '/ready')).status, 200, '/ready is 200 again')

      const answers = await traffic.stop()
      const statuses = new Set(answers.map((answer) => answer.status))
      t.same([...statuses].sort(), [200, 503], `${answers.length} deliveries under way through the outage were answered 200 or 503`)
      const slowest = Math.max(...answers.map((answer) => answer.ms))
      t.ok(slowest < ANSWER_WITHIN_MS, `none waited longer than ${ANSWER_WITHIN_MS} ms (slowest ${slowest} ms)`)
      const pool = running.app.db.poolStats()
      t.equal(pool.total - pool.idle, 0, `no connection stays checked out after the outage (${JSON.stringify(pool)})`)
    })
  }

  t.test('a network partition: a silent connection is given up after the query timeout and never reused', async (t) => {
    // The pool as the app opens it, with a 1 s client-side query timeout instead of 17 s.
    const handle = await openDatabase({ databaseUrl: proxied.toString(), dataDir: 'memory://', timeoutsMs: { query: 1_000 } }, pino({ level: 'silent' }))
    t.teardown(() => handle.close())
    const numberIn = (n: number) => handle.transaction(async (tx) => {
      const [row] = await tx.rows<{ n: number }>(sql`SELECT ${n}::int AS n`)
      return row!.n
    })
    const [pidRow] = await handle.transaction((tx) => tx.rows<{ pid: number }>(sql`SELECT pg_backend_pid() AS pid`))
    const frozenBackend = pidRow!.pid
    t.equal(handle.poolStats().total, 1, 'one connection, which the next transaction takes')

    await proxy.cut('frozen')
    const started = Date.now()
    const failure = await numberIn(2).then(() => undefined, (err: unknown) => err)
    const waited = Date.now() - started
    t.equal(classifyDatabaseError(failure).failure, 'unavailable', 'the transaction fails as "database unavailable" (503)')
    t.ok(waited < 2_500, `after the query timeout, not the TCP timeout (${waited} ms)`)

    // The partition heals: the old connection delivers the late answer to the BEGIN it was sent.
    await proxy.restore()
    const answers = await Promise.all([3, 4, 5, 6].map(numberIn))
    t.same(answers, [3, 4, 5, 6], 'every query gets its own answer')
    // Reused, it would be inside the timed-out BEGIN's transaction; it must have been closed instead.
    const gone = await waitFor(async () => {
      const { rows } = await admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [frozenBackend])
      return rows.length === 0 ? true : undefined
    }, 3_000, 50)
    t.ok(gone, 'the timed-out connection was closed, not put back in the pool')
    const pool = handle.poolStats()
    t.equal(pool.total - pool.idle, 0, 'nothing stays checked out')
  })

  t.test('every acknowledged delivery is committed; nothing internal leaked', async (t) => {
    const { rows } = await admin.query<{ id: string }>(
      `SELECT j.id FROM book_jobs j JOIN books b ON b.job_id = j.id
       WHERE j.id = ANY($1) AND j.status = 'COMPLETED' AND (SELECT count(*) FROM chapters c WHERE c.book_id = b.id) = 4`,
      [acknowledged])
    t.equal(rows.length, acknowledged.length, `all ${acknowledged.length} acknowledged deliveries are committed with their chapters`)

    const logs = running.rawLogs()
    t.ok(running.logs.some((line) => line.msg === 'request failed' && line.failure === 'unavailable'), 'outage errors are logged, classified')
    t.notOk(/INSERT INTO|Failed query|Chapitre 1/.test(logs), 'no SQL or book text in the logs')
    t.ok(running.logs.some((line) => line.msg === 'idle database connection lost' || line.msg === 'request failed'), 'the process survived lost connections')

    const metrics = await probe(running, '/metrics')
    t.match(metrics.text, /webhook_deliveries_total\{outcome="database_unavailable",status_code="503"\} [1-9]/)
  })
}

function probe (running: RunningApp, path: string) {
  return get(`${running.url}${path}`)
}
