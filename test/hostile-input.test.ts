import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import t from 'tap'
import { request } from 'undici'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { LIMITS } from '../src/webhooks/payload.ts'
import { completedDelivery } from '../scripts/deliveries.ts'
import { createUser, deliver, freshDatabase, get, signedBytesHeaders, snapshot, startApp, testConfig, type Answer } from './helper.ts'
import { findLeak } from './support/leaks.ts'
import { openRaw, sleep } from './support/raw-socket.ts'

/**
 * What an attacker or a broken network can send: oversized and slow bodies, huge headers, bodies
 * past every documented limit, hostile signatures, an internal failure. Every answer is a clear
 * 4xx (or a closed connection), nothing is written, and no response or log line leaks anything.
 */
const databaseUrl = await freshDatabase(t)
const SMALL_LIMIT = 64 * 1024
const TIMEOUT_MS = 1_500
// The defaults an operator gets (10 MiB, 60 s), and a small one to exercise limits and timeouts fast.
const normal = await startApp(t, testConfig(databaseUrl))
const strict = await startApp(t, testConfig(databaseUrl, { bodyLimitBytes: SMALL_LIMIT, requestTimeoutMs: TIMEOUT_MS }))
await createUser(normal, 'hostile-user')

/** In every book sent here: it must never reach a log line. */
const MARKER = `BOOK-TEXT-${randomUUID()}`
const signatures: string[] = []
const answers: Answer[] = []

/**
 * Sends exact bytes signed over them with node:crypto, `changes` applied to the signed headers
 * (undefined removes one); keeps the answer, and the signature made, to look for in the logs.
 */
async function send (endpoint: string, body: string, changes: Record<string, string | undefined> = {}, signing: { key?: Buffer } = {}) {
  const signed = signedBytesHeaders(body, signing)
  signatures.push(signed['webhook-signature']!)
  const headers = Object.fromEntries(Object.entries({ ...signed, ...changes }).filter((entry): entry is [string, string] => entry[1] !== undefined))
  const answer = await deliver(endpoint, body, headers)
  answers.push(answer)
  return answer
}

function book (chapters = 2) {
  const delivery = completedDelivery({ userId: 'hostile-user', chapters })
  delivery.book_data.book_title = `${MARKER} titre`
  delivery.book_data.chapters.forEach((chapter) => { chapter.content = `${MARKER} ${chapter.content}` })
  return delivery
}

function headersFor (body: number | 'chunked'): string {
  return `POST ${BOOK_COMPLETION_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
    'webhook-id: msg_raw\r\nwebhook-timestamp: 1\r\nwebhook-signature: v1,AAAA\r\n' +
    (body === 'chunked' ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${body}\r\n`) + '\r\n'
}

t.test('a declared Content-Length over the limit is a 413 before any body byte is read', async (t) => {
  for (const declared of [10 * 1024 * 1024 + 1, 50 * 1024 * 1024, Number.MAX_SAFE_INTEGER]) {
    const connection = await openRaw(normal.url)
    const started = Date.now()
    await connection.write(headersFor(declared))
    const status = await connection.status
    t.equal(status, 413, `Content-Length ${declared}: 413 with no body sent`)
    t.ok(Date.now() - started < 1_000, 'answered at once, without waiting for the body')
    await sleep(20)
    t.match(connection.received(), /\{"error":"payload_too_large","message":"[^"]+"\}/)
    connection.socket.destroy()
  }
})

t.test('a chunked body over the limit is a 413 near the limit, and the rest is read only up to the drain bound', async (t) => {
  const connection = await openRaw(strict.url)
  await connection.write(headersFor('chunked'))
  const chunk = Buffer.alloc(16 * 1024, 'a')
  const frame = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')])
  const state = { closed: false }
  connection.closed.then(() => { state.closed = true }, () => {})
  const started = Date.now()
  // An endless body (64 MiB and more, had the server kept reading).
  while (!state.closed && connection.sent() < 64 * 1024 * 1024 && Date.now() - started < 10_000) {
    await Promise.race([connection.write(frame), sleep(100)])
  }
  t.equal(await connection.status, 413)
  t.ok(state.closed, `the server closed the connection ${Date.now() - started} ms in`)
  // What was written includes the kernel's socket buffers; the server kept at most the limit.
  t.ok(connection.sent() < 16 * 1024 * 1024, `${connection.sent()} bytes written before the close (limit ${SMALL_LIMIT})`)
  t.match(connection.received(), /\{"error":"payload_too_large"/)
})

t.test('slow bodies and slow headers are cut off by the request timeout', async (t) => {
  const before = await snapshot(normal)
  const body = Buffer.from(JSON.stringify(book()))
  const cases: Array<[string, (connection: Awaited<ReturnType<typeof openRaw>>) => Promise<void>]> = [
    ['a body trickled one byte every 100 ms', async (connection) => {
      await connection.write(headersFor(body.length))
      for (let i = 0; i < body.length && !connection.socket.destroyed; i++) {
        await connection.write(body.subarray(i, i + 1))
        await sleep(100)
      }
    }],
    ['a body that stops after the headers', async (connection) => { await connection.write(headersFor(body.length)) }],
    ['headers that never end', async (connection) => { await connection.write(`POST ${BOOK_COMPLETION_PATH} HTTP/1.1\r\nHost: x\r\n`) }],
  ]
  await Promise.all(cases.map(async ([name, act]) => {
    const connection = await openRaw(strict.url)
    act(connection).catch(() => {})
    const closedAfter = await Promise.race([connection.closed, sleep(8_000).then(() => Infinity)])
    t.ok(closedAfter < TIMEOUT_MS + 3_000, `${name}: closed after ${closedAfter} ms (timeout ${TIMEOUT_MS} ms)`)
    t.match(connection.received(), /^(HTTP\/1\.1 408 |$)/, `${name}: 408 or a plain close`)
    connection.socket.destroy()
  }))
  t.same(await snapshot(normal), before, 'nothing was written')
})

t.test('headers over Node\'s 16 KiB limit are a 431; under it they are fine', async (t) => {
  const body = JSON.stringify(book())
  const huge = await send(normal.endpoint, body, { 'x-padding': 'p'.repeat(20 * 1024) })
  t.equal(huge.status, 431)
  const large = await send(normal.endpoint, body, { 'x-padding': 'p'.repeat(8 * 1024) })
  t.equal(large.status, 200)
})

t.test('past each documented limit: a 400 naming the field, nothing written', async (t) => {
  const before = await snapshot(normal)
  const cases: Array<[string, (delivery: ReturnType<typeof book>) => unknown, RegExp]> = [
    ['job_id', (d) => { d.job_id = 'j'.repeat(LIMITS.idLength + 1) }, /^job_id: /],
    ['book_title', (d) => { d.book_data.book_title = 't'.repeat(LIMITS.titleLength + 1) }, /^book_data\.book_title: /],
    ['chapter title', (d) => { d.book_data.chapters[0]!.title = 't'.repeat(LIMITS.titleLength + 1) }, /^book_data\.chapters\[0\]\.title: /],
    ['topic', (d) => { d.book_data.topic = 't'.repeat(LIMITS.textLength + 1) }, /^book_data\.topic: /],
    ['chapters', (d) => { d.book_data.chapters = Array.from({ length: LIMITS.chapters + 1 }, () => ({ title: 'c', content: 'c', description: 'c' })) }, /^book_data\.chapters: /],
    ['outline', (d) => { d.book_data.outline = Array.from({ length: LIMITS.outlineItems + 1 }, () => ({ title: 'o', description: 'o' })) }, /^book_data\.outline: /],
    ['word_count', (d) => { d.book_data.word_count = LIMITS.int32 + 1 }, /^book_data\.word_count: /],
  ]
  for (const [name, mutate, message] of cases) {
    const delivery = book()
    mutate(delivery)
    const answer = await send(normal.endpoint, JSON.stringify(delivery))
    t.equal(answer.status, 400, name)
    t.match(answer.body, { error: 'invalid_payload', message }, `${name}: ${answer.body.message as string}`)
  }
  const nested = (depth: number) => JSON.stringify(book()).replace(/}$/, `,"extra":${'['.repeat(depth)}${']'.repeat(depth)}}`)
  const deep = await send(normal.endpoint, nested(LIMITS.nestingDepth))
  t.match(deep, { status: 400, body: { message: /is nested deeper than 64 levels/ } })
  const deepest = await send(normal.endpoint, nested(1_000_000))
  t.match(deepest, { status: 400, body: { message: /is nested deeper than 64 levels/ } }, 'a million levels: refused before parsing')
  const duplicate = await send(normal.endpoint, JSON.stringify(book()).replace('"status":"completed"', '"status":"failed","status":"completed"'))
  t.match(duplicate, { status: 400, body: { message: 'status: is given twice in one object (duplicate key)' } })
  t.same(await snapshot(normal), before)

  const atLimits = book()
  atLimits.job_id = `${'😊'.repeat(LIMITS.idLength - 40)}${randomUUID()}`.slice(0, 300)
  atLimits.job_id = Array.from(atLimits.job_id).slice(0, LIMITS.idLength).join('')
  atLimits.book_data.book_title = `${MARKER}${'é'.repeat(LIMITS.titleLength - MARKER.length)}`
  const accepted = await send(normal.endpoint, JSON.stringify(atLimits).replace(/}$/, `,"extra":${'['.repeat(LIMITS.nestingDepth - 1)}${']'.repeat(LIMITS.nestingDepth - 1)}}`))
  t.equal(accepted.status, 200, 'exactly at the limits is accepted')
})

t.test('the signature is checked on the raw bytes before any parsing', async (t) => {
  const unsigned: Array<[string, string]> = [
    ['not JSON', '{"job_id": '],
    ['prototype poisoning', '{"__proto__":{"admin":true}}'],
    ['a million levels', '['.repeat(1_000_000)],
    ['duplicate keys', '{"a":1,"a":2}'],
    ['NUL', '{"job_id":"\\u0000"}'],
  ]
  for (const [name, body] of unsigned) {
    const wrongKey = await send(normal.endpoint, body, {}, { key: Buffer.alloc(32, 1) })
    t.match(wrongKey, { status: 401, body: { error: 'invalid_signature' } }, `${name}, wrong signature: 401, not 400`)
    const noSignature = await send(normal.endpoint, body, { 'webhook-signature': undefined })
    t.match(noSignature, { status: 401 }, `${name}, no signature: 401`)
  }
})

t.test('malformed signature and timestamp headers are a 401, never a 500 (lengths are checked before timingSafeEqual)', async (t) => {
  const body = JSON.stringify(book())
  const now = Math.floor(Date.now() / 1000)
  const headers: Array<Record<string, string>> = [
    { 'webhook-signature': 'v1,' },
    { 'webhook-signature': 'v1,AAAA' },
    { 'webhook-signature': `v1,${'A'.repeat(10_000)}` },
    { 'webhook-signature': 'v1,!!!not base64!!!' },
    { 'webhook-signature': 'v2,abc v1a,def ,,, v1' },
    { 'webhook-signature': 'v1,'.repeat(2_000) },
    { 'webhook-timestamp': `${now}abc` },
    { 'webhook-timestamp': '-5' },
    { 'webhook-timestamp': '99999999999999999999' },
    { 'webhook-timestamp': String(now + 301) },
    { 'webhook-id': '' },
  ]
  for (const spoiled of headers) {
    const answer = await send(normal.endpoint, body, spoiled)
    t.equal(answer.status, 401, JSON.stringify(spoiled).slice(0, 80))
  }
  const repeated = await request(normal.endpoint, {
    method: 'POST',
    body,
    headers: ['content-type', 'application/json', 'webhook-id', 'a', 'webhook-id', 'b', 'webhook-timestamp', String(now), 'webhook-signature', 'v1,AAAA'],
  })
  t.equal(repeated.statusCode, 401, 'a repeated webhook-id header')
  answers.push({ status: repeated.statusCode, headers: repeated.headers, body: {}, text: await repeated.body.text() })
})

t.test('an internal failure is a generic 500: no SQL, stack or path in the response or the logs', async (t) => {
  const broken = await startApp(t, testConfig(await freshDatabase(t)))
  await createUser(broken, 'hostile-user')
  await broken.query(sql`ALTER TABLE chapters RENAME TO chapters_moved`)
  const answer = await deliver(broken.endpoint, Buffer.from(JSON.stringify(book())))
  t.equal(answer.status, 500)
  t.same(answer.body, { error: 'internal_error', message: 'unexpected error; it has been logged' })
  t.equal(findLeak(answer.text), undefined)
  const logged = broken.logs.find((line) => line.msg === 'request failed')
  t.match(logged, { level: 50, code: '42P01', failure: 'other' }, 'the failure is logged by its code')
  // The bug can be found from the log: the line carries the stack frames, and nothing else of the error.
  const frames = (logged?.frames ?? []) as string[]
  t.ok(frames.length > 0 && frames.every((frame) => /^at .+:\d+:\d+\)?$/.test(frame)), `the log line has the stack frames, file:line:column (${frames.length})`)
  t.ok(frames.some((frame) => /webhooks\/deliver\.ts:\d+:\d+/.test(frame)), 'down to the delivery code whose query failed')
  t.notMatch(frames.join('\n'), /Failed query|params:|relation "|\bselect\s.+\sfrom|insert\s+into|on\s+conflict/i, 'the frames hold no SQL and no message')
  const withoutFrames = broken.logs.map(({ frames: _frames, ...line }) => JSON.stringify(line)).join('\n')
  t.equal(findLeak(withoutFrames, [MARKER, answer.signature!]), undefined, 'the logs hold no SQL, book text, secret or signature')
  t.notMatch(broken.rawLogs(), /Failed query|chapters_moved|relation "|insert into/i, 'nor the database error\'s message, anywhere')
  t.notOk(broken.rawLogs().includes(MARKER), 'nor book text')
})

t.test('no response leaks; no log line holds book text, a secret or a signature', async (t) => {
  answers.push({ ...await get(`${normal.url}/api/webhooks/${'../'.repeat(5)}etc/passwd`), body: {} })
  t.ok(answers.length > 30, `${answers.length} responses checked`)
  const leaking = answers.map((answer) => [answer.status, findLeak(answer.text)]).filter(([, leak]) => leak !== undefined)
  t.same(leaking, [], 'no stack, SQL, internal path or secret in any response')
  t.same(answers.filter((answer) => answer.text.includes(MARKER)).map((answer) => answer.status), [], 'no book text echoed in any response')

  const logs = normal.rawLogs() + strict.rawLogs()
  t.ok(logs.includes('"msg":"delivery"') && logs.includes('webhook signature rejected'), 'the logs were captured')
  t.equal(findLeak(logs, [MARKER]), undefined, 'no book text, secret, stack or SQL in the logs')
  t.same(signatures.filter((signature) => logs.includes(signature.slice(3))), [], 'no signature value in the logs')
})
