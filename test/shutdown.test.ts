import { connect } from 'node:net'
import pg from 'pg'
import t from 'tap'
import { Agent } from 'undici'
import { SHUTDOWN_GRACE_MS } from '../src/plugins/graceful-close.ts'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { completedDelivery } from '../scripts/deliveries.ts'
import { deliver, freshDatabase, requiresPostgres, signedHeaders, TEST_SECRET, waitFor } from './helper.ts'
import { spawnServer } from './support/process.ts'
import { openRaw } from './support/raw-socket.ts'

const DELIVERIES = 20

if (await requiresPostgres(t, 'SIGTERM with deliveries in flight')) {
  const databaseUrl = (await freshDatabase(t))!
  const admin = new pg.Client({ connectionString: databaseUrl })
  await admin.connect()
  t.teardown(() => admin.end())
  await admin.query("INSERT INTO users (id) VALUES ('shutdown-user')")
  // A second session holds the lock: pg_stat_activity is a snapshot inside a transaction.
  const locker = new pg.Client({ connectionString: databaseUrl })
  await locker.connect()
  t.teardown(() => locker.end())

  t.test('SIGTERM with 20 deliveries in flight: all answered 200, all committed, exit code 0', async (t) => {
    const server = await spawnServer(t, process.execPath, ['--import=tsx', 'src/server.ts'], {
      env: {
        PATH: process.env.PATH,
        ENVIRONMENT: 'production',
        DATABASE_URL: databaseUrl,
        WEBHOOK_SECRET: TEST_SECRET,
        HOST: '127.0.0.1',
        PORT: '0',
        LOG_LEVEL: 'info',
      },
    })

    // Holding the user row FOR UPDATE blocks every new job's foreign-key check: the deliveries are
    // inside their transactions (or queued for a pool connection) when SIGTERM arrives.
    await locker.query('BEGIN')
    await locker.query("SELECT id FROM users WHERE id = 'shutdown-user' FOR UPDATE")

    // Keep-alive sockets, as a real sender's HTTP client has: they must not hold the close open.
    const agent = new Agent({ keepAliveTimeout: 60_000 })
    t.teardown(() => agent.close())
    const deliveries = Array.from({ length: DELIVERIES }, () => completedDelivery({ userId: 'shutdown-user', chapters: 3 }))
    const answers = deliveries.map(async (delivery) => {
      const answer = await deliver(`${server.url}${BOOK_COMPLETION_PATH}`, delivery, undefined, agent)
      return { jobId: delivery.job_id, status: answer.status }
    })

    const waiting = await waitFor(async () => {
      const { rows } = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'book-completion-webhook' AND wait_event_type = 'Lock'`)
      return rows[0]!.n >= 10 ? rows[0]!.n : undefined
    }, 5_000)
    t.ok(waiting, `deliveries are blocked inside their transactions (${waiting} waiting on the lock)`)

    // A sender whose request is half sent when SIGTERM arrives: its socket is not idle, so it stays open.
    const late = completedDelivery({ userId: 'shutdown-user', chapters: 1 })
    const lateBody = JSON.stringify(late)
    const lateHeaders = signedHeaders(lateBody)
    const halfSent = await openRaw(server.url)
    await halfSent.write(`POST ${BOOK_COMPLETION_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n`)

    const signalledAt = Date.now()
    server.child.kill('SIGTERM')
    await new Promise((resolve) => setTimeout(resolve, 300))
    const port = Number(new URL(server.url).port)
    t.equal(await connectError(port), 'ECONNREFUSED', 'no new connections are accepted once closing')
    t.equal(server.child.exitCode, null, 'the process waits for the in-flight deliveries')

    await halfSent.write(Object.entries({ ...lateHeaders, 'content-length': String(Buffer.byteLength(lateBody)) })
      .map(([name, value]) => `${name}: ${value}\r\n`).join('') + `\r\n${lateBody}`)
    t.equal(await halfSent.status, 503, 'a request arriving while closing: 503')
    await halfSent.closed
    const [head = '', lateAnswer = ''] = halfSent.received().split('\r\n\r\n')
    t.same(JSON.parse(lateAnswer), { error: 'shutting_down', message: 'the service is shutting down; retry later' }, "the contract's 503 body, not Fastify's bare one")
    t.match(head, /^retry-after: 5$/im, 'with Retry-After')
    t.match(head, new RegExp(`^x-request-id: ${lateHeaders['webhook-id']}$`, 'im'), 'and x-request-id')
    t.match(head, /^connection: close$/im, 'and Connection: close')

    await locker.query('COMMIT')
    const settled = await Promise.all(answers)
    t.same(settled.map((answer) => answer.status), Array(DELIVERIES).fill(200), 'every in-flight delivery is answered 200')

    const code = await server.exited
    const shutdownMs = Date.now() - signalledAt
    t.equal(code, 0, 'exit code 0')
    t.ok(shutdownMs < SHUTDOWN_GRACE_MS, `exited within the grace period (${shutdownMs} ms after SIGTERM)`)

    const { rows } = await admin.query<{ id: string, status: string, books: number }>(`
      SELECT j.id, j.status, (SELECT count(*)::int FROM books b WHERE b.job_id = j.id) AS books
      FROM book_jobs j WHERE j.id = ANY($1)`, [settled.map((answer) => answer.jobId)])
    t.equal(rows.length, DELIVERIES, 'every acknowledged job is committed')
    const { rows: refused } = await admin.query('SELECT 1 FROM book_jobs WHERE id = $1', [late.job_id])
    t.equal(refused.length, 0, 'the refused one wrote nothing')
    t.ok(rows.every((row) => row.status === 'COMPLETED' && row.books === 1), 'each with its book')

    const output = server.output()
    t.match(output, /closing: finishing in-flight deliveries/)
    t.notOk(output.includes(TEST_SECRET.slice('whsec_'.length)), 'the secret is not in the process output')
  })
}

function connectError (port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve('connected') })
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
  })
}
