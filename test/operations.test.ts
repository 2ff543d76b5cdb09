import { readFile } from 'node:fs/promises'
import { sql } from 'drizzle-orm'
import t from 'tap'
import { DEAD_LETTERS_REFRESH_MS } from '../src/plugins/metrics.ts'
import { SIGNATURE_FAILURES } from '../src/webhooks/signature.ts'
import { TEST_SECRET, count, createUser, deliver, freshDatabase, get, signedHeaders, startApp, testConfig } from './helper.ts'
import { completedDelivery } from '../scripts/deliveries.ts'
import { Writable } from 'node:stream'
import pino from 'pino'
import { loggerOptions } from '../src/logger.ts'

const databaseUrl = await freshDatabase(t)
const running = await startApp(t, testConfig(databaseUrl))
await createUser(running, 'ops-user')

/** The value of one sample in Prometheus text format, or undefined when it is absent. */
function sample (metrics: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of metrics.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]))
    if (Object.entries(labels).every(([key, value]) => found[key] === value)) return Number(match[3])
  }
  return undefined
}

t.test('/health answers without the database, /ready with it', async (t) => {
  const health = await get(`${running.url}/health`)
  t.equal(health.status, 200)
  t.same(JSON.parse(health.text), { status: 'ok' })
  const ready = await get(`${running.url}/ready`)
  t.equal(ready.status, 200)
  t.same(JSON.parse(ready.text), { status: 'ready' })
  t.notOk(running.logs.some((line) => line.req !== undefined || line.res !== undefined), 'no per-request log lines for probes')
})

t.test('the request id is the webhook-id, echoed in x-request-id; helmet headers are on', async (t) => {
  const delivery = completedDelivery({ userId: 'ops-user', chapters: 2 })
  const answer = await deliver(running.endpoint, delivery, signedHeaders(delivery, { id: 'msg_ops_request_id_1' }))
  t.equal(answer.status, 200)
  t.equal(answer.headers['x-request-id'], 'msg_ops_request_id_1')
  t.equal(answer.headers['x-content-type-options'], 'nosniff')
  const line = running.logs.find((entry) => entry.msg === 'delivery' && entry.jobId === delivery.job_id)
  t.equal(line?.reqId, 'msg_ops_request_id_1', 'the delivery log line carries the webhook-id as reqId')

  const health = await get(`${running.url}/health`)
  t.match(health.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'without webhook-id a UUID is generated')
})

t.test('/metrics counts deliveries by outcome and status code, times them and shows the pool', async (t) => {
  const created = completedDelivery({ userId: 'ops-user', chapters: 3 })
  const body = JSON.stringify(created)
  const headers = signedHeaders(body)
  t.equal((await deliver(running.endpoint, body, headers)).status, 200)
  t.equal((await deliver(running.endpoint, body, headers)).status, 200, 'the same webhook-id again')
  t.equal((await deliver(running.endpoint, completedDelivery({ jobId: created.job_id, userId: 'ops-user', chapters: 1 }))).status, 200)
  const forged = signedHeaders(body, { secret: `whsec_${Buffer.alloc(32, 7).toString('base64')}` })
  t.equal((await deliver(running.endpoint, body, forged)).status, 401)
  t.equal((await deliver(running.endpoint, body, { ...headers, 'content-type': 'text/plain' })).status, 415)
  t.equal((await deliver(running.endpoint, { job_id: 'x', status: 'completed' })).status, 400)
  t.equal((await deliver(running.endpoint, completedDelivery({ userId: 'nobody-known' }))).status, 422)

  const metrics = await get(`${running.url}/metrics`)
  t.equal(metrics.status, 200)
  t.match(metrics.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  const m = metrics.text
  // Two deliveries created books before this test (the request-id test) and here: counted per app.
  t.equal(sample(m, 'webhook_deliveries_total', { outcome: 'book_created', status_code: '200' }), 2)
  t.equal(sample(m, 'webhook_deliveries_total', { outcome: 'duplicate_ignored', status_code: '200' }), 1)
  t.equal(sample(m, 'webhook_deliveries_total', { outcome: 'book_updated', status_code: '200' }), 1)
  t.equal(sample(m, 'webhook_deliveries_total', { outcome: 'rejected_signature', status_code: '401' }), 1)
  t.equal(sample(m, 'webhook_deliveries_total', { outcome: 'rejected', status_code: '415' }), 1)
  t.equal(sample(m, 'webhook_deliveries_total', { outcome: 'rejected', status_code: '400' }), 1)
  t.equal(sample(m, 'webhook_deliveries_total', { outcome: 'dead_lettered', status_code: '422' }), 1)
  t.equal(sample(m, 'webhook_delivery_duration_seconds_count', { outcome: 'book_created' }), 2)
  const seconds = sample(m, 'webhook_delivery_duration_seconds_sum', { outcome: 'book_created' })!
  t.ok(seconds > 0 && seconds < 10, `processing time is recorded in seconds (${seconds})`)
  t.equal(sample(m, 'webhook_delivery_duration_seconds_bucket', { outcome: 'book_created', le: '+Inf' }), 2)
  t.ok(sample(m, 'webhook_db_pool_connections')! >= 1, 'the pool holds connections')
  t.ok(sample(m, 'webhook_db_pool_idle_connections')! >= 1)
  t.equal(sample(m, 'webhook_db_pool_waiting_clients'), 0)
  t.type(sample(m, 'process_resident_memory_bytes'), 'number', 'default process metrics are exported')

  const counted = (text: string) => text.split('\n').filter((l) => l.startsWith('webhook_deliveries_total{'))
    .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0)
  const before = counted(m)
  for (const path of ['/health', '/ready', '/metrics', '/api/webhooks/unknown']) await get(`${running.url}${path}`)
  t.equal(counted((await get(`${running.url}/metrics`)).text), before, 'probes, scrapes and other routes are not deliveries')
})

t.test('signature rejections are counted by the verifier\'s reason', async (t) => {
  const before = (await get(`${running.url}/metrics`)).text
  t.match(before, /^# TYPE webhook_signature_rejections_total counter$/m)
  for (const reason of SIGNATURE_FAILURES) {
    t.type(sample(before, 'webhook_signature_rejections_total', { reason }), 'number', `${reason} is exported before it happens`)
  }
  const body = JSON.stringify(completedDelivery({ userId: 'ops-user', chapters: 1 }))
  const sent = [
    await deliver(running.endpoint, body, { 'content-type': 'application/json' }),
    await deliver(running.endpoint, body, { ...signedHeaders(body), 'webhook-timestamp': 'yesterday' }),
    await deliver(running.endpoint, body, signedHeaders(body, { at: new Date(Date.now() - 3_600_000) })),
    await deliver(running.endpoint, body, signedHeaders(body, { secret: `whsec_${Buffer.alloc(32, 9).toString('base64')}` })),
    await deliver(running.endpoint, body, signedHeaders(body, { secret: `whsec_${Buffer.alloc(32, 9).toString('base64')}` })),
  ]
  t.same(sent.map((answer) => answer.status), [401, 401, 401, 401, 401])
  const after = (await get(`${running.url}/metrics`)).text
  const added = Object.fromEntries(SIGNATURE_FAILURES.map((reason) => [reason,
    sample(after, 'webhook_signature_rejections_total', { reason })! - sample(before, 'webhook_signature_rejections_total', { reason })!]))
  t.same(added, { missing_headers: 1, invalid_timestamp: 1, timestamp_too_old: 1, timestamp_too_new: 0, no_matching_signature: 2 })
})

t.test('webhook_dead_letters_pending counts the pending dead letters, at most every few seconds', async (t) => {
  // A new app: its first scrape counts.
  const fresh = await startApp(t, testConfig(databaseUrl))
  await deliver(running.endpoint, completedDelivery({ userId: 'not-a-user-yet' }))
  const pending = await count(running, 'webhook_dead_letters', sql`replayed_at IS NULL`)
  t.ok(pending >= 1)
  t.equal(sample((await get(`${fresh.url}/metrics`)).text, 'webhook_dead_letters_pending'), pending, 'the count of webhook_dead_letters not replayed')

  t.equal((await deliver(running.endpoint, completedDelivery({ userId: 'not-a-user-yet' }))).status, 422)
  t.equal(sample((await get(`${fresh.url}/metrics`)).text, 'webhook_dead_letters_pending'), pending, 'a scrape right after reuses the count (no query per scrape)')
  await new Promise((resolve) => setTimeout(resolve, DEAD_LETTERS_REFRESH_MS + 100))
  t.equal(sample((await get(`${fresh.url}/metrics`)).text, 'webhook_dead_letters_pending'), pending + 1, `counted again after ${DEAD_LETTERS_REFRESH_MS / 1000} s`)
})

t.test('webhook_build_info carries the version and the Node.js version', async (t) => {
  const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'))
  const metrics = (await get(`${running.url}/metrics`)).text
  t.match(metrics, /^# TYPE webhook_build_info gauge$/m)
  t.equal(sample(metrics, 'webhook_build_info', { version, node_version: process.version }), 1)
})

t.test('each app has its own registry', async (t) => {
  const other = await startApp(t, testConfig(databaseUrl))
  const metrics = (await get(`${other.url}/metrics`)).text
  t.equal(sample(metrics, 'webhook_deliveries_total'), undefined, 'a new app has counted nothing')
  t.match(metrics, /# TYPE webhook_deliveries_total counter/)
})

t.test('no secret, signature or book text appears in the logs', async (t) => {
  const delivery = completedDelivery({ userId: 'ops-user', chapters: 1 })
  delivery.book_data.chapters[0]!.content = 'UNIQUE-BOOK-TEXT-7f3a9 contenu secret du livre'
  const body = JSON.stringify(delivery)
  const headers = signedHeaders(body)
  t.equal((await deliver(running.endpoint, body, headers)).status, 200)
  const tampered = body.replace('UNIQUE-BOOK-TEXT-7f3a9', 'UNIQUE-BOOK-TEXT-7f3b0')
  t.equal((await deliver(running.endpoint, tampered, headers)).status, 401)

  const logs = running.rawLogs()
  t.ok(logs.includes(delivery.job_id), 'the delivery was logged')
  t.ok(logs.includes('webhook signature rejected'), 'the rejection was logged')
  const secretKey = TEST_SECRET.slice('whsec_'.length)
  t.notOk(logs.includes(secretKey), 'the secret is not logged')
  for (const signature of headers['webhook-signature']!.split(' ')) {
    t.notOk(logs.includes(signature.slice(3)), 'the signature is not logged')
  }
  t.notOk(logs.includes('UNIQUE-BOOK-TEXT'), 'book content is not logged')
})

t.test('the production logger redacts signature headers and secrets if they are ever logged', async (t) => {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _encoding, callback) { lines.push(String(chunk)); callback() } })
  const logger = pino(loggerOptions(testConfig(databaseUrl)), sink)
  logger.info({ req: { headers: { 'webhook-signature': 'v1,c2lnbmF0dXJl', authorization: 'Bearer abc' } } }, 'request')
  logger.info({ headers: { 'webhook-signature': 'v1,c2lnbmF0dXJl' }, WEBHOOK_SECRET: TEST_SECRET }, 'headers')
  const text = lines.join('')
  t.notOk(text.includes('c2lnbmF0dXJl'))
  t.notOk(text.includes('Bearer abc'))
  t.notOk(text.includes(TEST_SECRET))
  t.equal(text.match(/\[redacted\]/g)?.length, 4)
})
