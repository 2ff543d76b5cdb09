import { randomBytes, randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { createServer as createHttpServer } from 'node:http'
import { createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import t, { type Test } from 'tap'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import type { CompletedDelivery } from '../src/webhooks/payload.ts'
import { count, createUser, freshDatabase, startApp, TEST_SECRET, testConfig } from './helper.ts'
import { freePort } from './support/free-port.ts'
import { attemptLines, book, cli, library, listing, python, QUICK_BACKOFF, startProxy, tempDir, type Body, type Kept } from './support/sender-kit.ts'

/**
 * Every refusal reaches the sender, and nothing is lost on the sending side (issue 19, contract
 * section 9): the kit's size check, the 413 read while the upload breaks, rejected/ with
 * `rejected`, `resend`, `drop`, the hints that name the cause, several secrets on each side.
 */

const OTHER_SECRET = `whsec_${randomBytes(32).toString('base64')}`
const THIRD_SECRET = `whsec_${randomBytes(32).toString('base64')}`
/** The service's limit in these tests, far below the kit's default (10 MiB): the service refuses first. */
const SERVICE_LIMIT = 1024 * 1024

const databaseUrl = await freshDatabase(t)
const production = await startApp(t, testConfig(databaseUrl, {}, { BODY_LIMIT_BYTES: String(SERVICE_LIMIT) }))
const holdingOther = await startApp(t, testConfig(databaseUrl, {}, { WEBHOOK_SECRET: OTHER_SECRET }))
const holdingTwo = await startApp(t, testConfig(databaseUrl, {}, { WEBHOOK_SECRET: `${THIRD_SECRET} ${OTHER_SECRET}` }))
await createUser(production, 'reader-1')

/** A book whose JSON is about `bytes` long (its first chapter padded with accented text). */
function bigBook (bytes: number): CompletedDelivery {
  const delivery = book('reader-1')
  const [first, ...others] = delivery.book_data.chapters
  return { ...delivery, book_data: { ...delivery.book_data, chapters: [{ ...first!, content: 'Des légumes au balcon. '.repeat(Math.ceil(bytes / 24)) }, ...others] } }
}

async function keptIn (spool: string): Promise<Kept[]> {
  return (await library('rejected', { spool_dir: spool })).kept!
}

/** A TCP listener that counts connections and never answers: proof that no connection was made. */
async function countingListener (t: Test): Promise<{ url: string, connections: () => number }> {
  let connections = 0
  const server = createServer((socket) => {
    connections++
    socket.destroy()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}${BOOK_COMPLETION_PATH}`, connections: () => connections }
}

/**
 * A server that answers as soon as it has the request's headers, without reading the body, then
 * closes hard (unread bytes: the kernel resets the connection while the client is still writing).
 */
async function earlyAnswerer (t: Test, status: number, headers: Record<string, string>, body: object): Promise<{ url: string, requests: () => number }> {
  let requests = 0
  const sockets = new Set<Socket>()
  const server: Server = createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
    let head = ''
    const onData = (chunk: Buffer) => {
      head += chunk.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      socket.off('data', onData)
      socket.pause()
      requests++
      const text = JSON.stringify(body)
      const lines = [`HTTP/1.1 ${status} Refused`, 'content-type: application/json', `content-length: ${Buffer.byteLength(text)}`, 'connection: close',
        ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`)]
      socket.write(`${lines.join('\r\n')}\r\n\r\n${text}`, () => setTimeout(() => socket.resetAndDestroy(), 20))
    }
    socket.on('data', onData)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    return new Promise((resolve) => server.close(resolve))
  })
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}${BOOK_COMPLETION_PATH}`, requests: () => requests }
}

t.test('a body over max_body_bytes is not sent: 413, both sizes named, kept in rejected/, no connection made', async (t) => {
  const listener = await countingListener(t)
  const dir = await tempDir(t, 'kit-size-')
  const spool = join(dir, 'spool')
  const delivery = book('reader-1')

  const outcome = await library('send', { url: listener.url, secret: TEST_SECRET, spool_dir: spool, max_body_bytes: 2048 }, delivery)
  t.match(outcome.rejected, { status: 413, body: { error: 'payload_too_large' } })
  const [kept] = await keptIn(spool)
  // The bytes send() serialised (Python's json.dumps), as kept.
  t.match(outcome.rejected!.message, `the body is ${Buffer.byteLength(kept!.body)} bytes, over max_body_bytes 2048`)
  t.match(outcome.rejected!.message, /not sent\); kept in .*rejected/)
  t.equal(attemptLines(outcome.run.stderr).length, 0, 'no attempt')
  t.match(kept, { webhook_id: outcome.rejected!.webhook_id, job_id: delivery.job_id, status: 413, url: listener.url, answer: { error: 'payload_too_large' } })
  t.same(JSON.parse(kept!.body), delivery)
  t.equal(kept!.path, outcome.rejected!.path)

  // The command line: WEBHOOK_MAX_BODY_BYTES, and --max-body-bytes over it.
  const file = join(dir, 'book.json')
  await writeFile(file, JSON.stringify(delivery))
  const size = Buffer.byteLength(JSON.stringify(delivery))
  const env = { WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool, WEBHOOK_URL: listener.url }
  const byEnv = await cli(['send', file], { ...env, WEBHOOK_MAX_BODY_BYTES: '4096' })
  t.equal(byEnv.code, 1, 'exit 1')
  t.match(JSON.parse(byEnv.stdout) as Body, { error: 'payload_too_large', message: `not sent: the body is ${size} bytes, over max_body_bytes 4096` })
  t.match(byEnv.stderr, /^book_completion_webhook\.py: rejected: 413 payload_too_large: not sent: .* kept in .*rejected.*: fix the cause, then resend msg_\w+$/m)
  const byOption = await cli(['send', file, '--max-body-bytes', '1024'], { ...env, WEBHOOK_MAX_BODY_BYTES: '4096' })
  t.match(byOption.stdout, 'over max_body_bytes 1024', '--max-body-bytes wins over the environment')
  t.equal(listener.connections(), 0, 'no connection was ever made')
  t.equal((await keptIn(spool)).length, 3)

  const badValues = ['ten', '0', '-5', '1e6']
  const badRuns = await Promise.all(badValues.map((bad) => cli(['send', file], { ...env, WEBHOOK_MAX_BODY_BYTES: bad })))
  for (const [i, run] of badRuns.entries()) {
    t.equal(run.code, 2, `WEBHOOK_MAX_BODY_BYTES=${badValues[i]}: exit 2`)
    t.match(run.stderr, /^book_completion_webhook\.py: error: WEBHOOK_MAX_BODY_BYTES: a whole number of bytes/)
    t.equal(run.stderr.trim().split('\n').length, 1)
  }
  const badOption = await cli(['send', file, '--max-body-bytes', 'lots'], env)
  t.equal(badOption.code, 2)
  t.match(badOption.stderr, /--max-body-bytes: a whole number of at least 1/)
})

t.test('413 from the service (the kit\'s limit above the service\'s): read in one attempt although the upload breaks, kept with both sizes', async (t) => {
  const spool = join(await tempDir(t, 'kit-413-'), 'spool')
  const delivery = bigBook(12 * 1024 * 1024)
  const outcome = await library('send', { url: production.endpoint, secret: TEST_SECRET, spool_dir: spool, max_body_bytes: 20 * 1024 * 1024, backoff: QUICK_BACKOFF }, delivery)
  t.match(outcome.rejected, { status: 413, body: { error: 'payload_too_large' } }, 'the service\'s 413', { stderr: outcome.run.stderr })
  t.same(attemptLines(outcome.run.stderr).map((line) => line.replace(/msg_\w+/, 'ID')), [`attempt 1/8 ID: 413 payload_too_large: ${(outcome.rejected!.body as { message: string }).message}; not retried (the same request would fail again)`], 'one attempt')
  const [kept] = await keptIn(spool)
  const size = Buffer.byteLength(kept!.body)
  t.ok(size > 12 * 1024 * 1024, `kept with its whole body (${size} bytes)`)
  t.match(kept, { status: 413, webhook_id: outcome.rejected!.webhook_id, job_id: delivery.job_id })
  t.match(outcome.rejected!.message, `The body is ${size} bytes; the service's limit is ${SERVICE_LIMIT} bytes`, 'the hint names both sizes, the limit from the service\'s answer')
  t.same(await listing(spool), ['rejected'], 'nothing spooled')
  t.equal(await count(production, 'book_jobs', sql`id = ${delivery.job_id}`), 0)

  // Within the service's drain bound (2 body limits): the rest is read, then the close; one attempt too.
  const drained = await library('send', { url: production.endpoint, secret: TEST_SECRET, spool_dir: spool, backoff: QUICK_BACKOFF }, bigBook(1.5 * 1024 * 1024))
  t.match(drained.rejected, { status: 413 })
  t.equal(attemptLines(drained.run.stderr).length, 1)
  t.equal((await keptIn(spool)).length, 2)
})

t.test('an answer sent before the server reset the upload is read: a 413 is kept (20 of 20), a 503 is retried then spooled', async (t) => {
  const spool = join(await tempDir(t, 'kit-early-'), 'spool')
  const refusing = await earlyAnswerer(t, 413, {}, { error: 'payload_too_large', message: `the body is larger than this service's limit of ${SERVICE_LIMIT} bytes (BODY_LIMIT_BYTES)` })
  // The kit's transport, 20 posts of a 12 MB book in one process, then one send() through it all.
  const body = Buffer.from(JSON.stringify(bigBook(12 * 1024 * 1024)), 'utf8')
  const run = await python(['-c', `
import json, sys, time
sys.path.insert(0, "clients/python")
import book_completion_webhook as kit
payload = sys.stdin.buffer.read()
seen = []
for _ in range(20):
    headers = kit.request_headers(kit.secret_keys(sys.argv[2]), kit.new_webhook_id(), int(time.time()), payload)
    try:
        seen.append(kit.post(sys.argv[1], payload, headers, 10).status)
    except (OSError, kit.http.client.HTTPException) as err:
        seen.append(kit.describe_failure(err, 10))
try:
    kit.send(payload, url=sys.argv[1], secret=sys.argv[2], spool_dir=sys.argv[3], max_body_bytes=20 * 1024 * 1024)
    message = "delivered?"
except kit.WebhookError as err:
    message = str(err).split(" (webhook-id")[0]
print(json.dumps({"seen": seen, "message": message}))
`, refusing.url, TEST_SECRET, spool], { stdin: body })
  t.equal(run.code, 0, 'ran', { stderr: run.stderr })
  const { seen, message } = JSON.parse(run.stdout) as { seen: unknown[], message: string }
  t.same(seen, Array(20).fill(413), '20 of 20 read the 413')
  t.equal(refusing.requests(), 21, 'one attempt each')
  t.equal(message, `413 payload_too_large: the body is larger than this service's limit of ${SERVICE_LIMIT} bytes (BODY_LIMIT_BYTES). The body is ${body.length} bytes; the service's limit is ${SERVICE_LIMIT} bytes`, 'the limit the answer gave')
  t.equal((await keptIn(spool)).length, 1)

  const busy = await earlyAnswerer(t, 503, { 'retry-after': '0' }, { error: 'overloaded', message: 'too many bodies in flight; retry later' })
  const outcome = await library('send', { url: busy.url, secret: TEST_SECRET, spool_dir: spool, max_body_bytes: 20 * 1024 * 1024, max_attempts: 3, backoff: QUICK_BACKOFF }, bigBook(12 * 1024 * 1024))
  t.ok(outcome.spooled, 'spooled after its retries')
  t.equal(busy.requests(), 3)
  t.match(attemptLines(outcome.run.stderr), [/503 overloaded: too many bodies in flight; retry later; retrying/, /503 overloaded/, /503 overloaded: .*giving up/])
  t.equal((await keptIn(spool)).length, 1, 'a 503 is not a rejection')
})

t.test('401 kept with its hint; resend --all with the right secret: 200, stored, rejected/ empty', async (t) => {
  const dir = await tempDir(t, 'kit-401-')
  const spool = join(dir, 'spool')
  const delivery = book('reader-1')
  const file = join(dir, 'book.json')
  await writeFile(file, JSON.stringify(delivery))
  const env = { WEBHOOK_SPOOL_DIR: spool, WEBHOOK_URL: production.endpoint }

  const wrong = await cli(['send', file], { ...env, WEBHOOK_SECRET: OTHER_SECRET })
  t.equal(wrong.code, 1)
  t.match(JSON.parse(wrong.stdout) as Body, { error: 'invalid_signature' })
  const line = wrong.stderr.trim().split('\n').at(-1)!
  t.match(line, /^book_completion_webhook\.py: rejected: 401 invalid_signature: no signature matches\. Check: the same WEBHOOK_SECRET on both sides/)
  t.match(line, 'whsec_<base64> is base64-decoded, any other value is plain text')
  t.match(line, 'this side\'s secret is a whsec_ one')
  t.notMatch(line, /clock/, 'the clocks agree: no word of them')
  t.notMatch(wrong.stderr, OTHER_SECRET.slice(6, 30), 'never the secret')
  t.equal(await count(production, 'book_jobs', sql`id = ${delivery.job_id}`), 0)

  const plainPassphrase = await cli(['send', file], { ...env, WEBHOOK_SECRET: 'our shared pass phrase for the webhook' })
  t.match(plainPassphrase.stderr, /WEBHOOK_SECRET holds 7 secrets separated by whitespace: signing with each/)
  t.match(plainPassphrase.stderr, /this side's WEBHOOK_SECRET holds 7 secrets separated by whitespace and signs with each \(a passphrase with spaces is several keys\)/)

  const listed = await cli(['rejected'], env)
  t.equal(listed.code, 0)
  const rows = listed.stdout.trim().split('\n')
  t.equal(rows.length, 2, 'one line per rejected delivery')
  t.match(rows[0], new RegExp(`^msg_\\w+  ${delivery.job_id}  401  invalid_signature: no signature matches\\. Check: .*  \\d{4}-\\d\\d-\\d\\dT`))
  t.match(listed.stderr, /2 rejected in .*rejected; after fixing the cause: resend --all/)
  const asJson = JSON.parse((await cli(['rejected', '--json'], env)).stdout) as Array<Record<string, unknown>>
  t.equal(asJson.length, 2)
  t.match(asJson[0], { job_id: delivery.job_id, status: 401, answer: { error: 'invalid_signature' } })
  t.ok(asJson.every((one) => typeof one.webhook_id === 'string' && typeof one.rejected_at === 'string'))
  t.notOk('body' in asJson[0]!, 'the listing holds no book text')

  const resent = await cli(['resend', '--all'], { ...env, WEBHOOK_SECRET: TEST_SECRET })
  t.equal(resent.code, 0, 'exit 0', { stderr: resent.stderr })
  const answers = resent.stdout.trim().split('\n').map((text) => JSON.parse(text) as Body)
  t.match(answers, [{ success: true, jobId: delivery.job_id, created: true }, { success: true, jobId: delivery.job_id }])
  t.match(resent.stderr, /resend: 2 delivered, 0 rejected again, 0 moved to the spool; 0 left in/)
  t.equal(await count(production, 'books', sql`job_id = ${delivery.job_id}`), 1, 'the book is stored')
  t.equal(production.logs.filter((entry) => entry.msg === 'delivery' && entry.jobId === delivery.job_id).length, 2, 'two deliveries, each with its own webhook-id')
  t.same(await listing(join(spool, 'rejected')), [], 'rejected/ is empty')
  t.same((await cli(['rejected'], env)).stdout, '')
})

t.test('422 kept while the service keeps its dead letter; once the user exists, resend ID delivers it', async (t) => {
  const spool = join(await tempDir(t, 'kit-422-'), 'spool')
  const user = `later-${randomUUID()}`
  const delivery = book(user)
  const outcome = await library('send', { url: production.endpoint, secret: TEST_SECRET, spool_dir: spool }, delivery)
  t.match(outcome.rejected, { status: 422, body: { error: 'unprocessable_delivery' } })
  t.equal(await count(production, 'webhook_dead_letters', sql`job_id = ${delivery.job_id}`), 1, 'the service\'s dead letter')
  const [kept] = await keptIn(spool)
  t.match(kept, { status: 422, job_id: delivery.job_id, webhook_id: outcome.rejected!.webhook_id })
  t.equal((await stat(kept!.path)).mode & 0o777, 0o600, 'readable by its owner only')
  t.equal((await stat(join(spool, 'rejected'))).mode & 0o077, 0, 'in a private directory')

  await createUser(production, user)
  const resent = await library('resend', { webhook_id: kept!.webhook_id, secret: TEST_SECRET, spool_dir: spool })
  t.match(resent.resent, { delivered: 1, rejected: 0, spooled: 0, responses: [{ success: true, jobId: delivery.job_id, created: true }] })
  t.equal(await count(production, 'books', sql`job_id = ${delivery.job_id}`), 1)
  t.same(await keptIn(spool), [])
})

t.test('400 and 404 kept with their hints; a new rejection updates the file', async (t) => {
  const spool = join(await tempDir(t, 'kit-400-'), 'spool')
  const invalid = { ...book('reader-1'), book_data: undefined }
  const bad = await library('send', { url: production.endpoint, secret: TEST_SECRET, spool_dir: spool }, invalid)
  t.match(bad.rejected, { status: 400, body: { error: 'invalid_payload' } })
  const wrongPath = `${production.url}/api/webhooks/bookcompletion`
  const lost = await library('send', { url: wrongPath, secret: TEST_SECRET, spool_dir: spool }, book('reader-1'))
  t.match(lost.rejected, { status: 404, body: { error: 'not_found' } })
  const port = new URL(production.url).port
  t.match(lost.rejected!.message, `Expected: POST ${BOOK_COMPLETION_PATH} on the service's port 3001; this went to port ${port}, path /api/webhooks/bookcompletion`)
  const kept = await keptIn(spool)
  t.same(kept.map((one) => one.status).sort(), [400, 404])
  t.equal(kept.find((one) => one.status === 404)!.url, wrongPath, 'the URL it was refused at')

  // Re-sent unchanged, the 400 is refused again: its one file is updated, not doubled.
  const before = kept.find((one) => one.status === 400)!
  const again = await cli(['resend', before.webhook_id], { WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool, WEBHOOK_URL: production.endpoint })
  t.equal(again.code, 1, 'not delivered: exit 1')
  t.match(again.stderr, /rejected again: 400 invalid_payload/)
  t.match(again.stderr, /resend: 0 delivered, 1 rejected again, 0 moved to the spool; 2 left in/)
  const after = (await keptIn(spool)).find((one) => one.webhook_id === before.webhook_id)!
  t.equal(after.path, before.path, 'the same file')
  t.ok(after.rejected_at > before.rejected_at, 'a later rejected_at')
  t.equal(after.body, before.body, 'the same bytes')
  t.equal((await listing(join(spool, 'rejected'))).length, 2)
})

t.test('retries spent on a resend move it to the spool; flush delivers it; flush never reads rejected/', async (t) => {
  const proxy = await startProxy(t, production)
  const spool = join(await tempDir(t, 'kit-move-'), 'spool')
  const delivery = book('reader-1')
  const refused = await library('send', { url: proxy.endpoint, secret: OTHER_SECRET, spool_dir: spool }, delivery)
  t.match(refused.rejected, { status: 401 })
  const webhookId = refused.rejected!.webhook_id

  // flush: an empty spool, exit 0, and the rejected delivery neither sent nor moved.
  proxy.expect()
  const flushedFirst = await cli(['flush', '--url', proxy.endpoint], { WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool })
  t.equal(flushedFirst.code, 0)
  t.equal(proxy.seen.length, 0, 'flush sent nothing')
  t.equal((await keptIn(spool)).length, 1, 'still in rejected/')

  await proxy.down()
  const moved = await library('resend', { url: proxy.endpoint, secret: TEST_SECRET, spool_dir: spool, max_attempts: 2, backoff: QUICK_BACKOFF })
  t.match(moved.resent, { delivered: 0, rejected: 0, spooled: 1 })
  t.match(moved.run.stderr, /the service is unavailable: msg_\w+ moved to the spool/)
  t.same(await keptIn(spool), [], 'no longer in rejected/')
  const spooled = (await listing(spool)).filter((name) => name.endsWith('.json'))
  t.equal(spooled.length, 1)
  t.equal((JSON.parse(await readFile(join(spool, spooled[0]!), 'utf8')) as { webhook_id: string }).webhook_id, webhookId)

  await proxy.up()
  const flushed = await library('flush', { url: proxy.endpoint, secret: TEST_SECRET, spool_dir: spool })
  t.match(flushed.flushed, { delivered: 1, rejected: 0, kept: 0 })
  t.equal(proxy.seen[0]!.headers['webhook-id'], webhookId, 'its own webhook-id all along')
  t.equal(await count(production, 'books', sql`job_id = ${delivery.job_id}`), 1)
})

t.test('a 503 and a closed port still spool; a 2xx leaves nothing behind', async (t) => {
  const proxy = await startProxy(t, production)
  const spool = join(await tempDir(t, 'kit-spool-'), 'spool')
  proxy.expect({ answer: 503, retryAfter: () => '0' }, { answer: 503, retryAfter: () => '0' })
  const busy = await library('send', { url: proxy.endpoint, secret: TEST_SECRET, spool_dir: spool, max_attempts: 2, backoff: QUICK_BACKOFF }, book('reader-1'))
  t.match(busy.spooled, { last_error: '503 proxy_503' })
  const closed = `http://127.0.0.1:${await freePort()}${BOOK_COMPLETION_PATH}`
  const away = await library('send', { url: closed, secret: TEST_SECRET, spool_dir: spool, max_attempts: 2, backoff: QUICK_BACKOFF }, book('reader-1'))
  t.match(away.spooled, { last_error: 'connection refused' })
  // The service's own 503, decided on the declared length before the body is read (load shedding).
  const base = testConfig(databaseUrl)
  const shedding = await startApp(t, { ...base, loadShedding: { ...base.loadShedding, maxInflightBodyBytes: 1024 * 1024 } })
  const shed = await library('send', { url: shedding.endpoint, secret: TEST_SECRET, spool_dir: spool, max_attempts: 1 }, bigBook(2 * 1024 * 1024))
  t.match(shed.spooled, { last_error: /^503 overloaded/ }, 'the service\'s 503 read although the body was not', { stderr: shed.run.stderr })
  t.match(attemptLines(shed.run.stderr), [/^attempt 1\/1 msg_\w+: 503 overloaded: .*; giving up \(1 attempt made/])
  t.equal((await listing(spool)).length, 3, 'three spooled deliveries')
  t.same(await keptIn(spool), [], 'neither is a rejection')

  const emptyDir = join(await tempDir(t, 'kit-2xx-'), 'spool')
  const delivered = await library('send', { url: production.endpoint, secret: TEST_SECRET, spool_dir: emptyDir }, book('reader-1'))
  t.match(delivered.delivered, { success: true, created: true })
  t.same(await listing(emptyDir), [], 'no spool, no rejected/')
})

t.test('drop ID deletes one kept rejection; unknown ids and bad usage', async (t) => {
  const spool = join(await tempDir(t, 'kit-drop-'), 'spool')
  const env = { WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool, WEBHOOK_URL: production.endpoint }
  const first = await library('send', { url: production.endpoint, secret: OTHER_SECRET, spool_dir: spool }, book('reader-1'))
  const second = await library('send', { url: production.endpoint, secret: OTHER_SECRET, spool_dir: spool }, book('reader-1'))
  const id = first.rejected!.webhook_id

  const dropped = await cli(['drop', id], env)
  t.equal(dropped.code, 0)
  t.match(dropped.stderr, new RegExp(`^dropped ${id} \\(job kit-[\\w-]+, 401 invalid_signature: .*\\): deleted .*rejected/${id}-[0-9a-f]{12}\\.json$`, 'm'))
  t.same((await keptIn(spool)).map((one) => one.webhook_id), [second.rejected!.webhook_id], 'the other one stays')

  const viaApi = await library('drop', { webhook_id: second.rejected!.webhook_id, spool_dir: spool })
  t.match(viaApi.dropped, { webhook_id: second.rejected!.webhook_id, status: 401 })
  t.same(await keptIn(spool), [])
  t.match((await library('drop', { webhook_id: id, spool_dir: spool })).unknown, { webhook_id: id, message: /no rejected delivery/ })
  t.match((await library('resend', { webhook_id: id, spool_dir: spool })).unknown, { webhook_id: id })

  const unknown = [['drop', id], ['resend', id]]
  for (const [i, run] of (await Promise.all(unknown.map((args) => cli(args, env)))).entries()) {
    t.equal(run.code, 1, `${unknown[i]![0]} of an unknown id: exit 1`)
    t.match(run.stderr, new RegExp(`^book_completion_webhook\\.py: no rejected delivery ${id} in `))
    t.equal(run.stderr.trim().split('\n').length, 1)
  }
  const nothing = await cli(['resend', '--all'], env)
  t.equal(nothing.code, 0, 'resend --all of nothing: exit 0')
  t.match(nothing.stderr, /resend: 0 delivered, 0 rejected again, 0 moved to the spool; 0 left/)

  const commands = ['rejected', 'resend', 'drop']
  const helps = await Promise.all(commands.map((command) => cli([command, '--help'])))
  for (const [i, help] of helps.entries()) {
    t.equal(help.code, 0, `${commands[i]} --help`)
    t.match(help.stdout, `usage: book_completion_webhook.py ${commands[i]}`)
  }
  t.match(helps[1]!.stdout, /--all[\s\S]*--url[\s\S]*--max-body-bytes/)
  const bad: Array<[string[], RegExp]> = [
    [['resend'], /one of the arguments ID --all is required/],
    [['resend', id, '--all'], /not allowed with argument/],
    [['drop'], /required: ID/],
    [['rejected', 'extra'], /unrecognized arguments: extra/],
    [['resend', '--all', '--max-attempts', '0'], /--max-attempts/],
  ]
  const runs = await Promise.all(bad.map(([args]) => cli(args, env)))
  for (const [i, [args, message]] of bad.entries()) {
    const run = runs[i]!
    t.equal(run.code, 2, `${args.join(' ')}: exit 2`)
    t.match(run.stderr, message)
    t.equal(run.stderr.trim().split('\n').length, 1, `one line: ${run.stderr.trim()}`)
  }
})

t.test('several secrets on each side: the kit signs with both, a service holding either accepts; none matching is 401 with the count', async (t) => {
  const proxy = await startProxy(t, holdingOther)
  const twoKeys = `${OTHER_SECRET}\n${TEST_SECRET}`
  const viaProxy = await library('send', { url: proxy.endpoint }, book('reader-1'), { WEBHOOK_SECRET: twoKeys })
  t.match(viaProxy.delivered, { success: true, created: true }, 'the service holding the first')
  t.equal((proxy.seen[0]!.headers['webhook-signature'] as string).split(' ').length, 2, 'one v1 entry per key')
  t.match((proxy.seen[0]!.headers['webhook-signature'] as string), /^v1,\S+ v1,\S+$/)
  t.match((await library('send', { url: production.endpoint }, book('reader-1'), { WEBHOOK_SECRET: twoKeys })).delivered, { success: true }, 'the service holding the second')
  t.match((await library('send', { url: holdingTwo.endpoint }, book('reader-1'), { WEBHOOK_SECRET: twoKeys })).delivered, { success: true }, 'a service holding two, one in common')
  t.match((await library('send', { url: holdingTwo.endpoint }, book('reader-1'), { WEBHOOK_SECRET: THIRD_SECRET })).delivered, { success: true }, 'a kit holding one, the service two')

  const spool = join(await tempDir(t, 'kit-keys-'), 'spool')
  const none = await library('send', { url: holdingTwo.endpoint, spool_dir: spool }, book('reader-1'), { WEBHOOK_SECRET: `${TEST_SECRET} ${randomBytes(30).toString('hex')}` })
  t.match(none.rejected, { status: 401 })
  t.match(none.rejected!.message, 'this side\'s WEBHOOK_SECRET holds 2 secrets separated by whitespace and signs with each')
})

t.test('401 hint with the clock: an answer whose Date is 10 minutes ahead says so', async (t) => {
  const server = createHttpServer((req, res) => {
    req.resume()
    req.on('end', () => {
      res.sendDate = false
      res.writeHead(401, { 'content-type': 'application/json', date: new Date(Date.now() + 600_000).toUTCString() })
        .end(JSON.stringify({ error: 'invalid_signature', message: 'webhook-timestamp is too old' }))
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}${BOOK_COMPLETION_PATH}`
  const spool = join(await tempDir(t, 'kit-clock-'), 'spool')
  const outcome = await library('send', { url, secret: TEST_SECRET, spool_dir: spool }, book('reader-1'))
  t.match(outcome.rejected, { status: 401 })
  t.match(outcome.rejected!.message, /the service's clock is (9 min 59|10 min 0|10 min 1) s ahead of this host's \(its Date header\)/)
  t.match(outcome.rejected!.message, /sync both clocks \(NTP\)/)
})
