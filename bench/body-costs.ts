/**
 * `npm run bench:body`: what the service spends per delivery on the body alone, in one process
 * (no HTTP, no database): the per-byte work a 94 KB book costs before any SQL is sent.
 * Compare with the service CPU per delivery of `npm run bench` and its profile.
 */
import { isUtf8 } from 'node:buffer'
import { createHmac, randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { findUnstorableText, mayHoldUnstorableText } from '../src/webhooks/payload.ts'
import { countWords } from '../src/webhooks/word-count.ts'
import { bookOfSize, completedDelivery } from '../scripts/deliveries.ts'
import { BENCH_USER_ID } from './database.ts'
import { exitOnBadOption, SIZES, type SizeName } from './options.ts'

const USAGE = `npm run bench:body -- [--size ${Object.keys(SIZES).join('|')}], 94k by default`

function readSize (): SizeName {
  let values
  try {
    ({ values } = parseArgs({ options: { size: { type: 'string', default: '94k' }, help: { type: 'boolean', short: 'h', default: false } } }))
  } catch (err) {
    return exitOnBadOption((err as Error).message, USAGE)
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`)
    process.exit(0)
  }
  if (!Object.hasOwn(SIZES, values.size)) return exitOnBadOption(`--size: one of ${Object.keys(SIZES).join(', ')} (got ${JSON.stringify(values.size)})`, USAGE)
  return values.size as SizeName
}

const size = SIZES[readSize()]
const body = Buffer.from(JSON.stringify(completedDelivery({ jobId: 'job-1', userId: BENCH_USER_ID, book: bookOfSize(size.chapters, size.bodyBytes) })))
const text = body.toString()
const parsed = JSON.parse(text) as { book_data: { chapters: Array<{ content: string }> } }
const contents = parsed.book_data.chapters.map((chapter) => chapter.content)
const key = randomBytes(32)

/** Microseconds per call, the median of 7 rounds after a warm-up. */
function measure (fn: () => unknown): number {
  const calls = Math.max(20, Math.round(200_000_000 / body.length / 10))
  for (let i = 0; i < calls; i++) fn()
  const rounds: number[] = []
  for (let round = 0; round < 7; round++) {
    const started = performance.now()
    for (let i = 0; i < calls; i++) fn()
    rounds.push((performance.now() - started) * 1000 / calls)
  }
  return rounds.sort((a, b) => a - b)[3]!
}

const steps: Array<[string, () => unknown]> = [
  ['HMAC-SHA256 over the raw body (signature)', () => createHmac('sha256', key).update('msg_1.1700000000.').update(body).digest()],
  ['isUtf8 (raw body)', () => isUtf8(body)],
  ['raw-body check for NUL / surrogates / depth', () => mayHoldUnstorableText(body)],
  ['UTF-8 decode (buffer.toString)', () => body.toString()],
  ['JSON.parse of the decoded text', () => JSON.parse(text)],
  ['walk of every string (skipped when the raw check passes)', () => findUnstorableText(parsed)],
  ['word count, table loop (the service)', () => contents.reduce((sum, content) => sum + countWords(content), 0)],
  ['word count, /\\S+/g (for comparison)', () => contents.reduce((sum, content) => sum + (content.match(/\S+/g)?.length ?? 0), 0)],
  ['UTF-8 encode of the texts for the wire (node-postgres)', () => contents.reduce((sum, content) => sum + Buffer.byteLength(content) + Buffer.from(content).length, 0)],
]
process.stdout.write(`body ${(body.length / 1000).toFixed(1)} KB, ${contents.length} chapters; load average ${(await import('node:os')).loadavg().map((n) => n.toFixed(2)).join(' ')}\n`)
for (const [name, fn] of steps) process.stdout.write(`${measure(fn).toFixed(1).padStart(8)} µs  ${name}\n`)
