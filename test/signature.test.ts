import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { completedDelivery } from '../scripts/deliveries.ts'
import { createUser, deliver, freshDatabase, signedBytesHeaders, signedHeaders, snapshot, startApp, testConfig, TEST_SECRET } from './helper.ts'

const databaseUrl = await freshDatabase(t)
const oldPlainSecret = 'an-old-plain-text-secret-of-32-bytes!'
const running = await startApp(t, testConfig(databaseUrl, {}, { WEBHOOK_SECRET: `${oldPlainSecret} ${TEST_SECRET}` }))
await createUser(running, 'u1')

async function expectRejected (t: Test, body: string, headers: Record<string, string>, why: string) {
  const before = await snapshot(running)
  const answer = await deliver(running.endpoint, body, headers)
  t.equal(answer.status, 401, why)
  t.equal(answer.body.error, 'invalid_signature')
  t.same(await snapshot(running), before, 'nothing is written')
  return answer
}

const body = () => JSON.stringify(completedDelivery({ userId: 'u1', chapters: 1 }))

t.test('a delivery signed by the standardwebhooks package passes', async (t) => {
  const payload = body()
  const answer = await deliver(running.endpoint, payload, signedHeaders(payload))
  t.equal(answer.status, 200)
})

t.test('a delivery signed with plain node:crypto passes (cross-check)', async (t) => {
  const payload = body()
  const answer = await deliver(running.endpoint, payload, signedBytesHeaders(payload, { id: 'msg_crypto' }))
  t.equal(answer.status, 200)
})

t.test('missing headers are 401 in production, whatever the payload says', async (t) => {
  const delivery = completedDelivery({ userId: 'u1', chapters: 1 })
  delivery.environment = 'development'
  const payload = JSON.stringify(delivery)
  await expectRejected(t, payload, { 'content-type': 'application/json' }, 'no signature headers')
  const headers = signedHeaders(payload)
  for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
    const partial = { ...headers }
    delete partial[name as keyof typeof partial]
    await expectRejected(t, payload, partial, `without ${name}`)
  }
})

t.test('a wrong secret, an altered body and a changed id are 401', async (t) => {
  const payload = body()
  await expectRejected(t, payload, signedHeaders(payload, { secret: `whsec_${randomBytes(32).toString('base64')}` }), 'wrong secret')
  const headers = signedHeaders(payload)
  await expectRejected(t, payload.replace('Chapitre 1', 'Chapitre 2'), headers, 'altered body')
  await expectRejected(t, `${payload} `, headers, 'one byte appended')
  await expectRejected(t, payload, { ...headers, 'webhook-id': 'msg_other' }, 'id not the signed one')
})

t.test('timestamps outside the tolerance (300 s) are 401, both ways; inside pass', async (t) => {
  const payload = body()
  await expectRejected(t, payload, signedHeaders(payload, { at: new Date(Date.now() - 310_000) }), 'stale')
  await expectRejected(t, payload, signedHeaders(payload, { at: new Date(Date.now() + 310_000) }), 'future')
  const inside = await deliver(running.endpoint, payload, signedHeaders(payload, { at: new Date(Date.now() - 290_000) }))
  t.equal(inside.status, 200, '290 s old is inside the window')
  const signed = signedBytesHeaders(payload, { id: 'msg_ts' })
  await expectRejected(t, payload, { ...signed, 'webhook-timestamp': `${signed['webhook-timestamp']}abc` }, 'a timestamp that is not plain digits')
})

t.test('WEBHOOK_TOLERANCE_SECONDS is honoured', async (t) => {
  const strict = await startApp(t, testConfig(databaseUrl, { toleranceSeconds: 10 }))
  const payload = JSON.stringify(completedDelivery({ userId: 'u1', chapters: 1 }))
  const old = await deliver(strict.endpoint, payload, signedHeaders(payload, { at: new Date(Date.now() - 30_000) }))
  t.equal(old.status, 401)
  const fresh = await deliver(strict.endpoint, payload, signedHeaders(payload))
  t.equal(fresh.status, 200)
})

t.test('several signature entries: a later valid one passes; only v1 entries count', async (t) => {
  const payload = body()
  const headers = signedHeaders(payload)
  const valid = headers['webhook-signature']!
  const bogus = `v1,${randomBytes(32).toString('base64')}`
  const answer = await deliver(running.endpoint, payload, { ...headers, 'webhook-signature': `${bogus} ${valid}` })
  t.equal(answer.status, 200)
  await expectRejected(t, payload, { ...headers, 'webhook-signature': valid.replace(/^v1,/, 'v2,') }, 'a v2 entry is not v1')
  await expectRejected(t, payload, { ...headers, 'webhook-signature': `${bogus} v1,short` }, 'no entry matches')
})

t.test('rotation: the old plain secret and the new whsec_ secret both pass', async (t) => {
  const payload = body()
  const withOld = await deliver(running.endpoint, payload, signedBytesHeaders(payload, { id: 'msg_old', secret: oldPlainSecret }))
  t.equal(withOld.status, 200, 'old (plain, UTF-8 bytes) secret')
  const withNew = await deliver(running.endpoint, payload, signedHeaders(payload))
  t.equal(withNew.status, 200, 'new whsec_ secret')
})

t.test('a whsec_ secret used as raw bytes by the sender is 401 and the log says which form is expected', async (t) => {
  const payload = body()
  await expectRejected(t, payload, signedBytesHeaders(payload, { id: 'msg_raw', key: Buffer.from(TEST_SECRET, 'utf8') }), 'whole whsec_ string used as the key')
  const line = running.logs.findLast((l) => l.msg === 'webhook signature rejected')
  t.equal(line?.reason, 'no_matching_signature')
  t.match(String(line?.hint), /whsec_<base64> is decoded/)
})

t.test('the signature is checked on the raw bytes before the body is parsed', async (t) => {
  const notJson = '{"job_id": '
  await expectRejected(t, notJson, { ...signedHeaders(notJson), 'webhook-signature': 'v1,AAAA' }, 'bad signature on bad JSON is 401, not 400')
  const answer = await deliver(running.endpoint, notJson, signedHeaders(notJson))
  t.equal(answer.status, 400, 'a correctly signed body that is not JSON is 400')
  t.equal(answer.body.error, 'invalid_json')
  // The same JSON with different whitespace is a different body: re-serialising would be wrong.
  const compact = body()
  const spaced = JSON.stringify(JSON.parse(compact), null, 2)
  await expectRejected(t, spaced, signedHeaders(compact), 'signed compact, sent spaced')
})

t.test('no secret or signature value ever reaches the logs', async (t) => {
  const raw = running.rawLogs()
  t.notOk(raw.includes(TEST_SECRET.slice(6)), 'no secret')
  t.notOk(raw.includes(oldPlainSecret), 'no old secret')
  t.notOk(/v1,[A-Za-z0-9+/]{20,}/.test(raw), 'no signature value')
})
