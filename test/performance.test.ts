import { sql } from 'drizzle-orm'
import t from 'tap'
import { loadConfig } from '../src/config.ts'
import { countWords } from '../src/webhooks/word-count.ts'
import { checkJsonStructure } from '../src/webhooks/json-structure.ts'
import { findUnstorableText, LIMITS, mayHoldUnstorableText } from '../src/webhooks/payload.ts'
import { completedDelivery } from '../scripts/deliveries.ts'
import { createUser, deliver, freshDatabase, snapshot, startApp, testConfig } from './helper.ts'

// What the lean write path skips or does differently must give the same answers as the slow way.

/** A deterministic generator (mulberry32), so a failure can be replayed. */
function random (seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

t.test('countWords agrees with /\\S+/g on every kind of whitespace JavaScript knows', async (t) => {
  const next = random(7)
  const alphabet = ['a', 'é', '😊', '#', ' ', '\t', '\n', '\r', '\v', '\f', '\u00a0', '\u1680', '\u2000', '\u200a',
    '\u200b', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000', '\ufeff', '\u0085', '\u180e', '\u001f']
  for (let i = 0; i < 2000; i++) {
    const text = Array.from({ length: Math.floor(next() * 40) }, () => alphabet[Math.floor(next() * alphabet.length)]).join('')
    const expected = text.match(/\S+/g)?.length ?? 0
    if (countWords(text) !== expected) t.fail(`countWords(${JSON.stringify(text)}) = ${countWords(text)}, the regex says ${expected}`)
  }
  t.equal(countWords(''), 0)
  t.equal(countWords(completedDelivery().book_data.chapters[0]!.content), completedDelivery().book_data.chapters[0]!.content.match(/\S+/g)!.length)
})

t.test('the raw-body check never lets unstorable text through', async (t) => {
  const clean = Buffer.from(JSON.stringify(completedDelivery()))
  t.equal(mayHoldUnstorableText(clean), false, 'a plain book is not walked')
  const deep = `{"x":${'['.repeat(LIMITS.nestingDepth + 1)}${']'.repeat(LIMITS.nestingDepth + 1)}}`
  for (const [name, body] of [
    ['NUL escape', '{"job_id":"a\\u0000"}'],
    ['lone high surrogate', '{"job_id":"\\ud800"}'],
    ['lone low surrogate, upper case', '{"job_id":"\\uDC00"}'],
  ] as const) {
    t.equal(mayHoldUnstorableText(Buffer.from(body)), true, `${name}: walked`)
    t.ok(findUnstorableText(JSON.parse(body)), `${name}: and the walk finds it`)
  }
  t.equal(mayHoldUnstorableText(Buffer.from(deep)), false, 'nesting is not this check\'s job')
  t.ok(checkJsonStructure(Buffer.from(deep)), 'deep nesting is refused on the raw bytes before parsing')
  // Soundness over random JSON: whenever the raw check says "nothing", the walk agrees.
  const next = random(11)
  const pieces = ['a', 'é', '\\u0000', '\\ud83d\\ude0a', '\\ud800', '\\\\ud800', '\\n', '{', '[', '"']
  for (let i = 0; i < 500; i++) {
    const text = Array.from({ length: 8 }, () => pieces[Math.floor(next() * pieces.length)]).join('')
    const body = `{"k":${JSON.stringify(text)},"e":"${text.replaceAll('"', '').replaceAll('{', '').replaceAll('[', '')}"}`
    let parsed: unknown
    try { parsed = JSON.parse(body) } catch { continue }
    if (!mayHoldUnstorableText(Buffer.from(body)) && findUnstorableText(parsed)) t.fail(`missed: ${body}`)
  }
})

t.test('DATABASE_PREPARED_STATEMENTS is on by default and can be turned off', async (t) => {
  const base = { ENVIRONMENT: 'development' }
  t.equal(loadConfig(base).preparedStatements, true)
  t.equal(loadConfig({ ...base, DATABASE_PREPARED_STATEMENTS: 'false' }).preparedStatements, false)
  t.equal(loadConfig({ ...base, DATABASE_PREPARED_STATEMENTS: '0' }).preparedStatements, false)
  t.throws(() => loadConfig({ ...base, DATABASE_PREPARED_STATEMENTS: 'maybe' }), { name: 'ConfigError', message: /^DATABASE_PREPARED_STATEMENTS/ })
})

t.test('over HTTP, unstorable text is still a 400 that writes nothing', async (t) => {
  const running = await startApp(t, testConfig(await freshDatabase(t)))
  await createUser(running, 'user_clerkid_123')
  const before = await snapshot(running)
  const body = JSON.stringify(completedDelivery({ userId: 'user_clerkid_123' }))
  for (const [name, bad] of [
    ['NUL in a chapter', body.replace('# Chapitre 1', '# Chapitre 1\\u0000')],
    ['lone surrogate in the title', body.replace('150 techniques', '150 \\udfff techniques')],
  ] as const) {
    const answer = await deliver(running.endpoint, bad)
    t.equal(answer.status, 400, name)
  }
  t.same(await snapshot(running), before)
})

t.test('chapter texts are stored with lz4 where the server has it', async (t) => {
  const databaseUrl = await freshDatabase(t)
  const running = await startApp(t, testConfig(databaseUrl))
  let lz4 = true
  try {
    await running.query(sql`CREATE TEMP TABLE lz4_probe (t text COMPRESSION lz4)`)
  } catch {
    lz4 = false // a server built without lz4, or the embedded database: the migration keeps the default
  }
  const [column] = await running.query<{ compression: string }>(sql`
    SELECT attcompression::text AS compression FROM pg_attribute WHERE attrelid = 'chapters'::regclass AND attname = 'content'`)
  t.equal(column?.compression, lz4 ? 'l' : '', lz4 ? 'lz4' : 'the default compression')

  await createUser(running, 'user_clerkid_123')
  const delivery = completedDelivery({ userId: 'user_clerkid_123', paragraphs: 200 })
  const answer = await deliver(running.endpoint, delivery)
  const [stored] = await running.query<{ content: string, method: string | null }>(sql`
    SELECT content, pg_column_compression(content) AS method FROM chapters WHERE book_id = ${answer.body.bookId} AND position = 1`)
  t.equal(stored?.content, delivery.book_data.chapters[0]!.content, 'a compressed chapter reads back as sent')
  if (lz4) t.equal(stored?.method, 'lz4')
})
