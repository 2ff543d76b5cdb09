import t, { type Test } from 'tap'
import { completedDelivery, failedDelivery } from '../scripts/deliveries.ts'
import { createUser, deliver, freshDatabase, signedBytesHeaders, signedHeaders, snapshot, startApp, testConfig, type Answer } from './helper.ts'

const databaseUrl = await freshDatabase(t)
const running = await startApp(t, testConfig(databaseUrl))
await createUser(running, 'u1')

type Mutable = Record<string, any>
const book = () => completedDelivery({ userId: 'u1', chapters: 2 }) as Mutable

/** Sends a signed body and asserts the status, the error, that the message names `field`, and no write. */
async function expectRejected (t: Test, payload: unknown, status: number, field: string | RegExp, headers?: Record<string, string>): Promise<Answer> {
  const before = await snapshot(running)
  const answer = await deliver(running.endpoint, payload, headers)
  t.equal(answer.status, status, `answered ${status}`)
  t.type(answer.body.error, 'string', 'a JSON error')
  if (typeof field === 'string') t.match(String(answer.body.message), field, `the message names ${field}`)
  else t.match(String(answer.body.message), field)
  t.notMatch(answer.text, /at \w+ \(|node_modules|SELECT|INSERT|whsec_/, 'no stack, SQL or secret')
  t.same(await snapshot(running), before, 'nothing is written')
  return answer
}

t.test('malformed JSON is 400 invalid_json', async (t) => {
  const answer = await expectRejected(t, '{"job_id": "x", ', 400, /JSON/)
  t.equal(answer.body.error, 'invalid_json')
  await expectRejected(t, '', 400, /JSON|empty/i)
  await expectRejected(t, '[]', 400, /body/)
})

t.test('each required field missing is 400 naming it', async (t) => {
  const topLevel = ['job_id', 'status', 'timestamp', 'environment', 'book_data']
  for (const field of topLevel) {
    const payload = book()
    delete payload[field]
    await expectRejected(t, payload, 400, field)
  }
  for (const field of ['book_title', 'topic', 'goal', 'outline', 'chapters', 'generated_at', 'word_count', 'chapter_count']) {
    const payload = book()
    delete payload.book_data[field]
    await expectRejected(t, payload, 400, `book_data.${field}`)
  }
  for (const field of ['title', 'content', 'description']) {
    const payload = book()
    delete payload.book_data.chapters[1][field]
    await expectRejected(t, payload, 400, `book_data.chapters[1].${field}`)
  }
  const failed = failedDelivery('job-failed-no-error', '') as Mutable
  await expectRejected(t, failed, 400, 'error')
  delete failed.error
  await expectRejected(t, failed, 400, 'error')
})

t.test('wrong values are 400 naming the field', async (t) => {
  await expectRejected(t, { ...book(), status: 'done' }, 400, 'status')
  const empty = book()
  empty.book_data.chapters = []
  await expectRejected(t, empty, 400, 'book_data.chapters')
  await expectRejected(t, { ...book(), job_id: 'x'.repeat(256) }, 400, 'job_id')
  await expectRejected(t, { ...book(), job_id: '' }, 400, 'job_id')
  await expectRejected(t, { ...book(), job_id: 42 }, 400, 'job_id')
  const countAsString = book()
  countAsString.book_data.word_count = '15000'
  await expectRejected(t, countAsString, 400, 'book_data.word_count')
  const tooBig = book()
  tooBig.book_data.chapter_count = 2 ** 31
  await expectRejected(t, tooBig, 400, 'book_data.chapter_count')
  const badDate = book()
  badDate.book_data.generated_at = '2025-02-30T10:00:00Z'
  await expectRejected(t, badDate, 400, 'book_data.generated_at')
  await expectRejected(t, { ...book(), timestamp: 'yesterday' }, 400, 'timestamp')
  await expectRejected(t, { ...book(), user_id: '' }, 400, 'user_id')
})

t.test('a 255-character job id, unknown fields and a zone-less generated_at are accepted', async (t) => {
  const payload = book()
  payload.job_id = `test-auto-create-${'x'.repeat(238)}`
  t.equal(payload.job_id.length, 255)
  payload.crew_run = { agents: 3 }
  payload.book_data.cover = 'ignored'
  payload.book_data.generated_at = '2025-10-20T10:23:34.861000'
  const answer = await deliver(running.endpoint, payload)
  t.equal(answer.status, 200)
})

t.test('text Postgres cannot store is 400, never 500', async (t) => {
  const nul = book()
  nul.book_data.chapters[0].content = 'avant\u0000après'
  await expectRejected(t, nul, 400, 'book_data.chapters[0].content')
  const nulInUnknownField = { ...book(), extra: { note: 'a\u0000b' } }
  await expectRejected(t, nulInUnknownField, 400, 'extra.note')
  const nulInKey = { ...book(), 'bad\u0000key': 1 }
  await expectRejected(t, nulInKey, 400, /key/)
  const loneSurrogate = JSON.stringify(book()).replace('Chapitre 1', 'Chapitre \\ud800 1')
  await expectRejected(t, loneSurrogate, 400, /surrogate/)
  const invalidUtf8 = Buffer.concat([Buffer.from(JSON.stringify(book()).slice(0, -2)), Buffer.from([0xc3, 0x28]), Buffer.from('"}')])
  await expectRejected(t, invalidUtf8, 400, /UTF-8/, signedBytesHeaders(invalidUtf8))
  let deep: unknown = 'bottom'
  for (let i = 0; i < 100; i++) deep = { deeper: deep }
  await expectRejected(t, { ...book(), deep }, 400, /nested/)
})

t.test('415 for anything but application/json; a charset parameter is allowed', async (t) => {
  const payload = JSON.stringify(book())
  const signed = signedHeaders(payload)
  for (const contentType of ['text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'application/jsonp']) {
    const answer = await expectRejected(t, payload, 415, /application\/json/, { ...signed, 'content-type': contentType })
    t.equal(answer.body.error, 'unsupported_media_type', contentType)
  }
  const { 'content-type': _omit, ...noType } = signed
  await expectRejected(t, payload, 415, /application\/json/, noType)
  const withCharset = await deliver(running.endpoint, payload, { ...signed, 'content-type': 'application/json; charset=utf-8' })
  t.equal(withCharset.status, 200)
})

t.test('413 above BODY_LIMIT_BYTES, with a JSON body; a multi-megabyte book under it is stored', async (t) => {
  const small = await startApp(t, testConfig(databaseUrl, { bodyLimitBytes: 4096 }))
  const before = await snapshot(small)
  const payload = JSON.stringify(completedDelivery({ userId: 'u1', chapters: 20 }))
  t.ok(payload.length > 4096)
  const answer = await deliver(small.endpoint, payload)
  t.equal(answer.status, 413)
  t.equal(answer.body.error, 'payload_too_large')
  t.equal(answer.body.message, 'the body is larger than this service\'s limit of 4096 bytes (BODY_LIMIT_BYTES)', 'the message states the limit')
  t.same(await snapshot(small), before)

  const large = completedDelivery({ userId: 'u1', chapters: 40, paragraphs: 1000 })
  const largeBody = JSON.stringify(large)
  t.ok(largeBody.length > 4 * 1024 * 1024, `a ${(largeBody.length / 1048576).toFixed(1)} MiB book`)
  const stored = await deliver(running.endpoint, largeBody)
  t.equal(stored.status, 200)
  t.equal(stored.body.chaptersCreated, 40)
})

t.test('a value only Postgres can find out of range is still a 400', async (t) => {
  const farOffset = book()
  farOffset.book_data.generated_at = '2025-10-20T10:23:34+23:00'
  await expectRejected(t, farOffset, 400, /cannot store/)
})
