import { randomBytes, randomUUID } from 'node:crypto'
import { readFile, rm, writeFile } from 'node:fs/promises'
import type { IncomingHttpHeaders } from 'node:http'
import { basename, join } from 'node:path'
import { sql } from 'drizzle-orm'
import t from 'tap'
import { secretToKey } from '../src/config.ts'
import type { CompletedDelivery } from '../src/webhooks/payload.ts'
import { sign, verifySignature } from '../src/webhooks/signature.ts'
import { count, createUser, freshDatabase, standardWebhook, startApp, TEST_SECRET, testConfig, type RunningApp } from './helper.ts'
import { attemptLines, book, cli, library, listing, python, QUICK_BACKOFF, startProxy, tempDir, type Body } from './support/sender-kit.ts'

/**
 * The Python sender kit (clients/python, contract section 9) run as python3 processes against the
 * real service: signing, retries through a flaky proxy, rejections, the spool and flush, the CLI.
 */

const OLD_SECRET = `whsec_${randomBytes(32).toString('base64')}`
const NEW_SECRET = `whsec_${randomBytes(32).toString('base64')}`
// Plain secrets are their UTF-8 bytes: the non-ASCII characters make a Latin-1 reading differ.
// No whitespace: in WEBHOOK_SECRET, whitespace separates secrets (rotation).
const PLAIN_SECRET = 'le-secret-partagé-du-backend—assez-long✓'

async function storedBook (running: RunningApp, jobId: string) {
  const [stored] = await running.query<{ title: string, topic: string, goal: string, user_id: string }>(
    sql`SELECT title, topic, goal, user_id FROM books WHERE job_id = ${jobId}`)
  const chapters = await running.query<{ position: number, title: string, content: string, description: string }>(sql`
    SELECT c.position, c.title, c.content, c.description FROM chapters c JOIN books b ON b.id = c.book_id
    WHERE b.job_id = ${jobId} ORDER BY c.position`)
  return { stored, chapters }
}

function verifiesWithService (headers: IncomingHttpHeaders, body: Buffer, secrets: string[]): boolean {
  try {
    verifySignature(headers, body, { keys: secrets.map(secretToKey), toleranceSeconds: 300, nowSeconds: Math.floor(Date.now() / 1000) })
    return true
  } catch {
    return false
  }
}

function verifiesWithPackage (headers: IncomingHttpHeaders, body: Buffer, secret: string): boolean {
  try {
    standardWebhook(secret).verify(body.toString('utf8'), headers as Record<string, string>, { jsonParse: false })
    return true
  } catch {
    return false
  }
}

// --- the service -------------------------------------------------------------------------------

const databaseUrl = await freshDatabase(t)
const production = await startApp(t, testConfig(databaseUrl))
const rotating = await startApp(t, testConfig(databaseUrl, {}, { WEBHOOK_SECRET: `${NEW_SECRET} ${OLD_SECRET}` }))
const plain = await startApp(t, testConfig(databaseUrl, {}, { WEBHOOK_SECRET: PLAIN_SECRET }))
await createUser(production, 'reader-1')

t.test('the kit\'s own unittest file passes (signing vector, backoff bounds, Retry-After, spool format)', async (t) => {
  const run = await python(['-m', 'unittest', 'discover', '-s', 'clients/python', '-v'])
  t.equal(run.code, 0, 'exit 0', { stderr: run.stderr })
  const ran = Number(/^Ran (\d+) tests? in/m.exec(run.stderr)?.[1] ?? 0)
  t.ok(ran >= 25, `ran ${ran} tests`)
  t.match(run.stderr, /test_the_standard_webhooks_vector .* ok/)
  t.match(run.stderr, /^OK/m)
})

t.test('send FILE.json, signed: 200, and the French seed book stored byte for byte', async (t) => {
  const proxy = await startProxy(t, production)
  const dir = await tempDir(t, 'kit-send-')
  const delivery = book('reader-1')
  // Indented and with a trailing newline: the file's own bytes are what is signed and sent.
  const file = join(dir, 'book.json')
  const bytes = Buffer.from(`${JSON.stringify(delivery, null, 2)}\n`, 'utf8')
  await writeFile(file, bytes)

  const run = await cli(['send', file, '--url', proxy.endpoint], { WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: join(dir, 'spool') })
  t.equal(run.code, 0, 'exit 0', { stderr: run.stderr })
  const answer = JSON.parse(run.stdout) as Body
  t.match(answer, { success: true, jobId: delivery.job_id, created: true, chaptersCreated: 5 })
  t.same(attemptLines(run.stderr).map((line) => line.replace(/msg_[0-9a-f]{32}/, 'ID')), ['attempt 1/8 ID: 200; delivered'])

  t.equal(proxy.seen.length, 1)
  t.ok(proxy.seen[0]!.body.equals(bytes), 'the exact bytes of the file went on the wire')
  t.ok(verifiesWithService(proxy.seen[0]!.headers, proxy.seen[0]!.body, [TEST_SECRET]))

  const { stored, chapters } = await storedBook(production, delivery.job_id)
  t.same(stored, { title: delivery.book_data.book_title, topic: delivery.book_data.topic, goal: delivery.book_data.goal, user_id: 'reader-1' })
  t.same(chapters, delivery.book_data.chapters.map((chapter, i) => ({ position: i + 1, ...chapter })), 'accents, Markdown and emoji as sent')
  t.ok(chapters.some((chapter) => chapter.content.includes('🍅')))
  t.same(await listing(join(dir, 'spool')), [], 'nothing spooled')
})

t.test('send(payload) serialises once as UTF-8 (no \\u escapes) and returns the parsed 200 body', async (t) => {
  const proxy = await startProxy(t, production)
  const delivery = book('reader-1')
  const outcome = await library('send', { url: proxy.endpoint, secret: TEST_SECRET }, delivery)
  t.match(outcome.delivered, { success: true, jobId: delivery.job_id, created: true, chaptersCreated: 5 })
  const wire = proxy.seen[0]!.body
  t.same(JSON.parse(wire.toString('utf8')), delivery)
  t.ok(wire.includes(Buffer.from('légumes', 'utf8')) && wire.includes(Buffer.from('🌱', 'utf8')), 'raw UTF-8 on the wire')
  t.notOk(wire.includes('\\u'), 'no ensure_ascii escapes')
  const { chapters } = await storedBook(production, delivery.job_id)
  t.same(chapters.map((chapter) => chapter.content), delivery.book_data.chapters.map((chapter) => chapter.content))
})

t.test('a plain UTF-8 secret signs with its UTF-8 bytes', async (t) => {
  const proxy = await startProxy(t, plain)
  const delivery = book('reader-1')
  const outcome = await library('send', { url: proxy.endpoint }, delivery, { WEBHOOK_SECRET: PLAIN_SECRET })
  t.match(outcome.delivered, { success: true, created: true })
  t.equal((proxy.seen[0]!.headers['webhook-signature'] as string).split(' ').length, 1, 'one key, one signature')
  t.ok(verifiesWithService(proxy.seen[0]!.headers, proxy.seen[0]!.body, [PLAIN_SECRET]))
  t.equal(await count(plain, 'books', sql`job_id = ${delivery.job_id}`), 1)
})

t.test('rotation: a service holding the new and the old secret accepts the kit signing with either', async (t) => {
  for (const secret of [OLD_SECRET, NEW_SECRET]) {
    const delivery = book('reader-1')
    const outcome = await library('send', { url: rotating.endpoint, secret }, delivery)
    t.match(outcome.delivered, { success: true, created: true }, secret === OLD_SECRET ? 'old secret' : 'new secret')
  }
  // The other way round: a kit holding two secrets signs with both; a service with one of them accepts.
  const proxy = await startProxy(t, production)
  const outcome = await library('send', { url: proxy.endpoint }, book('reader-1'), { WEBHOOK_SECRET: `${OLD_SECRET} ${TEST_SECRET}` })
  t.match(outcome.delivered, { success: true, created: true })
  const header = proxy.seen[0]!.headers['webhook-signature'] as string
  t.equal(header.split(' ').length, 2)
  t.ok(verifiesWithService(proxy.seen[0]!.headers, proxy.seen[0]!.body, [OLD_SECRET]))
  t.ok(verifiesWithService(proxy.seen[0]!.headers, proxy.seen[0]!.body, [TEST_SECRET]))
})

t.test('signatures cross-check: the kit\'s verify with standardwebhooks (npm) and the service\'s verifier, and theirs equal the kit\'s', async (t) => {
  for (const [secret, running] of [[TEST_SECRET, production], [PLAIN_SECRET, plain]] as const) {
    const label = secret === PLAIN_SECRET ? 'plain secret' : 'whsec_ secret'
    // The kit's real request, as the service receives it.
    const proxy = await startProxy(t, running)
    await library('send', { url: proxy.endpoint, secret }, book('reader-1'))
    const { headers, body } = proxy.seen[0]!
    t.ok(verifiesWithPackage(headers, body, secret), `${label}: npm standardwebhooks verifies the kit's request`)
    t.ok(verifiesWithService(headers, body, [secret]), `${label}: the service's verifier accepts it`)
    // The same length, one letter changed inside the JSON ("é" stays valid UTF-8).
    const tampered = Buffer.from(body.toString('utf8').replace('potager', 'potagex'), 'utf8')
    t.equal(tampered.length, body.length)
    t.notOk(verifiesWithPackage(headers, tampered, secret), `${label}: one changed byte fails npm's check`)
    t.notOk(verifiesWithService(headers, tampered, [secret]), `${label}: and the service's`)

    // The other direction: for the same id, time and bytes, the kit computes npm's and the service's signature.
    const id = `msg_${randomUUID()}`
    const timestamp = 1_760_000_000 + Math.floor(Math.random() * 1_000_000)
    const bytes = Buffer.from(JSON.stringify({ title: 'Réussir — « vraiment » 🎯', n: Math.random() }), 'utf8')
    const kitSigned = await python(['-c',
      'import sys; sys.path.insert(0, "clients/python"); import book_completion_webhook as kit; ' +
      'print(kit.sign(kit.secret_keys(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.stdin.buffer.read()))',
      secret, id, String(timestamp)], { stdin: bytes })
    t.equal(kitSigned.code, 0, 'the kit signed', { stderr: kitSigned.stderr })
    t.equal(kitSigned.stdout.trim(), standardWebhook(secret).sign(id, new Date(timestamp * 1000), bytes.toString('utf8')), `${label}: npm's signature`)
    t.equal(kitSigned.stdout.trim(), sign(secretToKey(secret), id, timestamp, bytes), `${label}: the service's signature`)
  }
})

t.test('retries: 503 + Retry-After, 429 + an HTTP-date Retry-After, a dropped connection, a timeout; same id and bytes', async (t) => {
  const proxy = await startProxy(t, production)
  proxy.expect(
    { answer: 503, retryAfter: () => '1' },
    { answer: 429, retryAfter: () => new Date(Date.now() + 2000).toUTCString() },
    { drop: true },
    { hang: true }
  )
  const delivery = book('reader-1')
  const outcome = await library('send', { url: proxy.endpoint, secret: TEST_SECRET, timeout: 0.5, backoff: QUICK_BACKOFF }, delivery)
  t.match(outcome.delivered, { success: true, created: true, chaptersCreated: 5 })

  const seen = proxy.seen
  t.equal(seen.length, 5, 'five attempts')
  const ids = new Set(seen.map((request) => request.headers['webhook-id']))
  t.equal(ids.size, 1, 'one webhook-id for every attempt')
  t.ok(seen.every((request) => request.body.equals(seen[0]!.body)), 'the same bytes every attempt')
  const timestamps = seen.map((request) => Number(request.headers['webhook-timestamp']))
  t.ok(timestamps.at(-1)! > timestamps[0]!, `a fresh timestamp per attempt (${timestamps.join(', ')})`)
  t.not(seen.at(-1)!.headers['webhook-signature'], seen[0]!.headers['webhook-signature'], 'and a fresh signature')
  t.ok(seen.every((request) => verifiesWithService(request.headers, request.body, [TEST_SECRET])), 'every attempt is validly signed')

  const gaps = seen.slice(1).map((request, i) => request.atMs - seen[i]!.atMs)
  t.ok(gaps[0]! >= 950, `Retry-After: 1 honoured (${gaps[0]!.toFixed(0)} ms)`)
  t.ok(gaps[1]! >= 950, `an HTTP-date Retry-After honoured (${gaps[1]!.toFixed(0)} ms)`)
  // No Retry-After: the quick backoff alone (its wait is in the attempt line below; the gap adds process time).
  t.ok(gaps[2]! < 5000, `after the dropped connection (${gaps[2]!.toFixed(0)} ms)`)
  t.ok(gaps[3]! >= 450, `the attempt timed out after 0.5 s (${gaps[3]!.toFixed(0)} ms)`)

  const lines = attemptLines(outcome.run.stderr)
  t.equal(lines.length, 5, 'one line per attempt', { stderr: outcome.run.stderr })
  t.match(lines[0], /^attempt 1\/8 msg_\w+: 503 proxy_503; retrying in 1\.0 s, Retry-After 1 s$/)
  t.match(lines[1], /^attempt 2\/8 msg_\w+: 429 proxy_429; retrying in [12]\.\d s, Retry-After [12](\.\d+)? s$/)
  t.match(lines[2], /^attempt 3\/8 msg_\w+: connection closed without an answer; retrying in 0\.\d s$/)
  t.match(lines[3], /^attempt 4\/8 msg_\w+: no answer within 0\.5 s; retrying in 0\.\d s$/)
  t.match(lines[4], /^attempt 5\/8 msg_\w+: 200; delivered$/)
  t.equal(await count(production, 'books', sql`job_id = ${delivery.job_id}`), 1)
})

t.test('an outbound proxy from http_proxy / https_proxy: the absolute URL and Basic credentials, no_proxy bypasses it, HTTPS tunnels with CONNECT', async (t) => {
  const proxy = await startProxy(t, production)
  const proxyUrl = new URL(proxy.endpoint)
  const viaProxy = { http_proxy: `http://kit%40backend:pa%3Ass@${proxyUrl.host}` }

  proxy.expect()
  const delivery = book('reader-1')
  const outcome = await library('send', { url: production.endpoint, secret: TEST_SECRET, backoff: QUICK_BACKOFF }, delivery, viaProxy)
  t.match(outcome.delivered, { success: true, created: true }, 'delivered through the proxy', { stderr: outcome.run.stderr })
  t.equal(proxy.seen.length, 1, 'one request reached the proxy')
  t.equal(proxy.seen[0]!.url, production.endpoint, 'with the service\'s absolute URL')
  t.equal(proxy.seen[0]!.headers['proxy-authorization'], `Basic ${Buffer.from('kit@backend:pa:ss').toString('base64')}`, 'the proxy URL\'s credentials, decoded')
  t.equal(proxy.seen[0]!.headers.host, new URL(production.endpoint).host, 'Host is the service')
  t.equal(await count(production, 'books', sql`job_id = ${delivery.job_id}`), 1, 'stored')

  proxy.expect()
  const direct = await library('send', { url: production.endpoint, secret: TEST_SECRET, backoff: QUICK_BACKOFF }, book('reader-1'), { ...viaProxy, no_proxy: 'localhost,127.0.0.1' })
  t.match(direct.delivered, { success: true }, 'no_proxy: delivered')
  t.equal(proxy.seen.length, 0, 'no_proxy: straight to the service')

  const spool = join(await tempDir(t, 'kit-proxy-'), 'spool')
  const tunnelled = await library('send', { url: 'https://books.internal:3443/api/webhooks/book-completion', secret: TEST_SECRET, spool_dir: spool, max_attempts: 2, backoff: QUICK_BACKOFF },
    book('reader-1'), { https_proxy: `http://ops:secret@${proxyUrl.host}` })
  t.same(proxy.tunnels.map((tunnel) => tunnel.target), ['books.internal:3443', 'books.internal:3443'], 'HTTPS: a CONNECT to the service\'s host and port, each attempt')
  t.equal(proxy.tunnels[0]!.headers['proxy-authorization'], `Basic ${Buffer.from('ops:secret').toString('base64')}`, 'with the credentials')
  t.equal(proxy.seen.length, 0, 'no request in the clear')
  t.match(attemptLines(tunnelled.run.stderr)[0], /403/, 'the proxy\'s refusal is in the attempt line')
  t.ok(tunnelled.spooled, 'a tunnel the proxy refuses is a network failure: retried, then spooled')
})

t.test('a 4xx other than 429: one attempt, an error with the status and body, nothing spooled, the delivery kept in rejected/', async (t) => {
  const proxy = await startProxy(t, production)
  const spool = join(await tempDir(t, 'kit-4xx-'), 'spool')
  const cases: Array<{ name: string, payload: unknown, secret: string, status: number, error: string }> = [
    { name: '422 unknown user', payload: book(`nobody-${randomUUID()}`), secret: TEST_SECRET, status: 422, error: 'unprocessable_delivery' },
    { name: '401 wrong secret', payload: book('reader-1'), secret: OLD_SECRET, status: 401, error: 'invalid_signature' },
    { name: '400 invalid payload', payload: { ...book('reader-1'), book_data: undefined }, secret: TEST_SECRET, status: 400, error: 'invalid_payload' },
  ]
  for (const { name, payload, secret, status, error } of cases) {
    proxy.expect()
    const outcome = await library('send', { url: proxy.endpoint, secret, spool_dir: spool, backoff: QUICK_BACKOFF }, payload)
    t.match(outcome.rejected, { status, body: { error } }, name)
    t.equal(proxy.seen.length, 1, `${name}: exactly one attempt`)
    t.equal(attemptLines(outcome.run.stderr).length, 1)
    t.match(attemptLines(outcome.run.stderr)[0], /; not retried/)
    t.same((await listing(spool)).filter((name) => name.endsWith('.json')), [], `${name}: nothing spooled`)
    t.match(outcome.rejected!.path, join(spool, 'rejected'), `${name}: kept in rejected/`)
  }
  t.equal((await listing(join(spool, 'rejected'))).length, 3, 'one file per rejected delivery')
  const unknownUser = cases[0]!.payload as CompletedDelivery
  t.equal(await count(production, 'webhook_dead_letters', sql`job_id = ${unknownUser.job_id}`), 1, 'the 422 is the service\'s dead letter')
  t.equal(await count(production, 'book_jobs', sql`id = ${(cases[1]!.payload as CompletedDelivery).job_id}`), 0, 'the 401 wrote nothing')
})

t.test('service down: spooled atomically; flush delivers it later with the same webhook-id', async (t) => {
  const proxy = await startProxy(t, production)
  const spool = join(await tempDir(t, 'kit-down-'), 'spool')
  await proxy.down()

  const delivery = book('reader-1')
  const spooled = await library('send', { url: proxy.endpoint, secret: TEST_SECRET, spool_dir: spool, max_attempts: 3, backoff: QUICK_BACKOFF }, delivery)
  t.ok(spooled.spooled, 'spooled', { stdout: spooled.run.stdout, stderr: spooled.run.stderr })
  const { path, webhook_id: webhookId } = spooled.spooled!
  t.same(await listing(spool), [basename(path)], 'one file per delivery, no temporary file left')
  t.match(spooled.spooled!.message, path, 'the error names the file')
  const lines = attemptLines(spooled.run.stderr)
  t.equal(lines.length, 3, 'max_attempts bounds the attempts')
  t.ok(lines.every((line) => line.includes('connection refused')))
  t.match(lines[2], /giving up \(3 attempts made/)
  const record = JSON.parse(await readFile(path, 'utf8')) as { webhook_id: string, body: string }
  t.equal(record.webhook_id, webhookId)
  t.same(JSON.parse(record.body), delivery)
  t.equal(await count(production, 'book_jobs', sql`id = ${delivery.job_id}`), 0)

  await proxy.up()
  const flushed = await cli(['flush', '--url', proxy.endpoint], { WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool })
  t.equal(flushed.code, 0, 'flush: exit 0', { stderr: flushed.stderr })
  t.match(JSON.parse(flushed.stdout.trim()), { success: true, jobId: delivery.job_id, created: true, chaptersCreated: 5 })
  t.match(flushed.stderr, /flush: 1 delivered, 0 rejected, 0 kept; 0 left in/)
  t.equal(proxy.seen.length, 1)
  t.equal(proxy.seen[0]!.headers['webhook-id'], webhookId, 'the spooled webhook-id')
  t.ok(proxy.seen[0]!.body.equals(Buffer.from(record.body, 'utf8')), 'the spooled bytes')
  t.same(await listing(spool), [], 'the spool is emptied')
  t.equal(await count(production, 'books', sql`job_id = ${delivery.job_id}`), 1)
})

t.test('an answer lost after the commit: flush re-sends the same webhook-id and the service answers it as a retry', async (t) => {
  const proxy = await startProxy(t, production)
  const spool = join(await tempDir(t, 'kit-lost-'), 'spool')
  proxy.expect({ forward: true, thenDown: true })
  const delivery = book('reader-1')
  const spooled = await library('send', { url: proxy.endpoint, secret: TEST_SECRET, spool_dir: spool, max_attempts: 3, backoff: QUICK_BACKOFF }, delivery)
  t.ok(spooled.spooled, 'spooled', { stdout: spooled.run.stdout, stderr: spooled.run.stderr })
  t.match(attemptLines(spooled.run.stderr), [/connection closed without an answer/, /connection refused/, /connection refused/])
  t.equal(await count(production, 'books', sql`job_id = ${delivery.job_id}`), 1, 'the first attempt was applied')

  await proxy.up()
  const flushed = await library('flush', { url: proxy.endpoint, secret: TEST_SECRET, spool_dir: spool })
  t.match(flushed.flushed, { delivered: 1, rejected: 0, kept: 0 })
  t.match(flushed.flushed!.responses[0], { success: true, jobId: delivery.job_id, created: false, chaptersCreated: 5 })
  t.equal(proxy.seen[0]!.headers['webhook-id'], spooled.spooled!.webhook_id)
  const outcomes = production.logs.filter((line) => line.msg === 'delivery' && line.jobId === delivery.job_id).map((line) => line.outcome)
  t.same(outcomes, ['book_created', 'duplicate_ignored'])
  t.equal(await count(production, 'books', sql`job_id = ${delivery.job_id}`), 1, 'still one book')
  t.same(await listing(spool), [])
})

t.test('bounds and what flush keeps', async (t) => {
  const proxy = await startProxy(t, production)
  const spool = join(await tempDir(t, 'kit-bounds-'), 'spool')
  await proxy.down()

  const bounded = await library('send', { url: proxy.endpoint, secret: TEST_SECRET, spool_dir: spool, max_attempts: 1000, max_elapsed: 1, backoff: [0.2, 0.3] }, book('reader-1'))
  t.ok(bounded.spooled)
  const lines = attemptLines(bounded.run.stderr)
  t.ok(lines.length > 1 && lines.length < 20, `${lines.length} attempts within max_elapsed 1 s`)
  t.match(lines.at(-1), /giving up \(the next attempt would start after max_elapsed 1 s/)
  t.ok(bounded.run.ms < 5000, `${bounded.run.ms.toFixed(0)} ms`)

  // Service still down: flush keeps the delivery and says so.
  const stillDown = await cli(['flush', '--url', proxy.endpoint, '--max-attempts', '1'], { WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool })
  t.equal(stillDown.code, 1)
  t.match(stillDown.stderr, /flush: 0 delivered, 0 rejected, 1 kept; 1 left in/)
  t.equal((await listing(spool)).length, 1)

  // A delivery the service rejects stays in the spool; the flush goes on with the others.
  const orphan = book(`nobody-${randomUUID()}`)
  await library('send', { url: proxy.endpoint, secret: TEST_SECRET, spool_dir: spool, max_attempts: 1 }, orphan)
  t.equal((await listing(spool)).length, 2)
  await proxy.up()
  const partly = await cli(['flush', '--url', proxy.endpoint], { WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool })
  t.equal(partly.code, 1, 'not empty after it')
  t.match(partly.stderr, /422 unprocessable_delivery/)
  t.match(partly.stderr, /flush: 1 delivered, 1 rejected, 0 kept; 1 left in/)
  const left = await listing(spool)
  t.equal(left.length, 1)
  t.equal((JSON.parse(await readFile(join(spool, left[0]!), 'utf8')) as { body: string }).body.includes(orphan.job_id), true)
})

t.test('command line: exit codes, one line per attempt, bad usage', async (t) => {
  const proxy = await startProxy(t, production)
  const dir = await tempDir(t, 'kit-cli-')
  const spool = join(dir, 'spool')
  const env = { WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool }
  const good = join(dir, 'good.json')
  await writeFile(good, JSON.stringify(book('reader-1')))
  const orphan = join(dir, 'orphan.json')
  await writeFile(orphan, JSON.stringify(book(`nobody-${randomUUID()}`)))

  const help = await cli(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /usage: book_completion_webhook\.py .*\{send,flush,rejected,resend,drop\}/)
  t.match(help.stdout, /WEBHOOK_SPOOL_DIR/)
  const sendHelp = await cli(['send', '--help'])
  t.equal(sendHelp.code, 0)
  for (const option of ['--url', '--max-attempts', '--max-elapsed', '--timeout', 'FILE.json']) t.match(sendHelp.stdout, option)

  const ok = await cli(['send', good, '--url', proxy.endpoint], env)
  t.equal(ok.code, 0, '2xx: exit 0')
  t.match(JSON.parse(ok.stdout), { success: true })

  const rejected = await cli(['send', orphan, '--url', proxy.endpoint], env)
  t.equal(rejected.code, 1, '4xx: exit 1')
  t.match(JSON.parse(rejected.stdout.trim()), { error: 'unprocessable_delivery' }, 'the answer on stdout')
  t.match(rejected.stderr, /rejected: 422 unprocessable_delivery/)

  const notFound = await cli(['send', good, '--url', `${production.url}/api/webhooks/wrong`], env)
  t.equal(notFound.code, 1)
  t.equal(attemptLines(notFound.stderr).length, 1, 'a 404 is not retried')
  t.match(JSON.parse(notFound.stdout.trim()), { error: 'not_found' })

  await proxy.down()
  const spooled = await cli(['send', good, '--url', proxy.endpoint, '--max-attempts', '1'], env)
  t.equal(spooled.code, 1, 'spooled: exit 1')
  t.match(spooled.stderr, /^attempt 1\/1 msg_\w+: connection refused; giving up \(1 attempt made/m)
  const [file] = await listing(spool)
  t.match(spooled.stderr, `spooled to ${join(spool, file!)}`)
  await rm(spool, { recursive: true })

  const emptyFlush = await cli(['flush', '--url', proxy.endpoint], env)
  t.equal(emptyFlush.code, 0, 'flush of an empty spool: exit 0')
  t.match(emptyFlush.stderr, /flush: 0 delivered, 0 rejected, 0 kept; 0 left/)

  const notJson = join(dir, 'not.json')
  await writeFile(notJson, '{"job_id": ')
  const array = join(dir, 'array.json')
  await writeFile(array, '[1, 2]')
  const bad: Array<[string[], RegExp, Record<string, string>?]> = [
    [[], /required: \{send,flush,rejected,resend,drop\}/],
    [['frobnicate'], /invalid choice/],
    [['send'], /required: FILE\.json/],
    [['send', join(dir, 'absent.json')], /cannot read .*absent\.json/],
    [['send', notJson], /not JSON/],
    [['send', array], /JSON object/],
    [['send', good, '--max-attempts', '0'], /--max-attempts: a whole number of at least 1/],
    [['send', good, '--max-elapsed', 'soon'], /--max-elapsed: seconds, more than 0/],
    [['send', good, '--timeout', '-1'], /--timeout/],
    [['send', good, '--bogus'], /unrecognized arguments: --bogus/],
    [['send', good, '--url', 'ftp://example.org/x'], /not an http\(s\) URL/],
    [['flush', '--url', 'localhost:3001'], /not an http\(s\) URL/],
    [['send', good], /whsec_ secret must be followed by standard base64/, { WEBHOOK_SECRET: 'whsec_not-base64!' }],
  ]
  const runs = await Promise.all(bad.map(([args, , extraEnv]) => cli(args, { ...env, WEBHOOK_URL: proxy.endpoint, ...extraEnv })))
  for (const [i, [args, message]] of bad.entries()) {
    const run = runs[i]!
    t.equal(run.code, 2, `${args.join(' ') || '(no arguments)'}: exit 2`)
    t.match(run.stderr, message)
    t.equal(run.stderr.trim().split('\n').length, 1, `one line: ${run.stderr.trim()}`)
    t.notMatch(run.stderr, /Traceback|whsec_not-base64/)
  }
  t.same(await listing(spool), [], 'bad usage sends and spools nothing')
})

t.test('stopped during its retries (SIGTERM), the command line spools the delivery first', async (t) => {
  const proxy = await startProxy(t, production)
  const dir = await tempDir(t, 'kit-term-')
  const spool = join(dir, 'spool')
  const file = join(dir, 'book.json')
  await writeFile(file, JSON.stringify(book('reader-1')))
  proxy.expect({ answer: 503, retryAfter: () => '30' })
  const run = await cli(['send', file, '--url', proxy.endpoint], { WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool }, (child) => {
    const poll = setInterval(() => {
      if (proxy.seen.length > 0) {
        clearInterval(poll)
        setTimeout(() => child.kill('SIGTERM'), 200)
      }
    }, 20)
  })
  t.equal(run.code, 130, 'exit 130', { stderr: run.stderr })
  t.ok(run.ms < 10_000, 'it did not wait out the Retry-After')
  t.match(run.stderr, /retrying in 30\.0 s, Retry-After 30 s/)
  t.match(run.stderr, /interrupted: msg_\w+ spooled to /)
  const files = await listing(spool)
  t.equal(files.length, 1)
  t.equal((JSON.parse(await readFile(join(spool, files[0]!), 'utf8')) as { webhook_id: string }).webhook_id, proxy.seen[0]!.headers['webhook-id'])
})
