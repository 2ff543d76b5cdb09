import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import fc from 'fast-check'
import { deliver, signedBytesHeaders, type RunningApp } from '../helper.ts'
import { findLeak } from '../support/leaks.ts'
import { buildDeliveries, interleaving, violation, type StoredJob } from './interleavings.ts'
import { invalidDelivery, type InvalidCase } from './invalid-delivery.ts'
import { validDelivery, withUniqueJobId, type ValidCase } from './valid-delivery.ts'

/** What the closing note reports. A "partial write" is any state that is neither all nor nothing of a delivery. */
interface FuzzFigures {
  cases: { valid: number, invalid: number, interleavings: number }
  requests: number
  statuses: Record<string, number>
  invalidKinds: Record<string, number>
  serverErrors: number
  partialWrites: number
  leaks: number
}

export function newFigures (): FuzzFigures {
  return { cases: { valid: 0, invalid: 0, interleavings: 0 }, requests: 0, statuses: {}, invalidKinds: {}, serverErrors: 0, partialWrites: 0, leaks: 0 }
}

/**
 * `FUZZ_RUNS` cases in total (default 300, what `npm test` runs), split between the three
 * properties; `FUZZ_SEED` replays a reported failure.
 */
export function fuzzBudget (env: NodeJS.ProcessEnv = process.env) {
  const total = Math.max(10, Number(env.FUZZ_RUNS ?? 300) || 300)
  const seed = env.FUZZ_SEED === undefined ? undefined : Number(env.FUZZ_SEED)
  return {
    total,
    valid: Math.round(total * 0.3),
    invalid: Math.round(total * 0.5),
    interleavings: total - Math.round(total * 0.3) - Math.round(total * 0.5),
    seed,
    // 200 chapters of every plane's text cost ~20 ms a case: the full range is the long run's.
    maxChapters: total >= 2_000 ? 200 : 60,
  }
}

function record (figures: FuzzFigures, answer: { status: number, text: string }): void {
  figures.requests++
  figures.statuses[answer.status] = (figures.statuses[answer.status] ?? 0) + 1
  if (answer.status >= 500) figures.serverErrors++
  if (findLeak(answer.text)) figures.leaks++
}

const rowsOf = <T>(running: RunningApp, query: ReturnType<typeof sql>) => running.query<T>(query)

/** Arbitrary valid payloads → 200, and the stored rows are exactly what was sent. */
export async function validProperty (running: RunningApp, runs: number, maxChapters: number, figures: FuzzFigures, seed?: number): Promise<void> {
  await fc.assert(fc.asyncProperty(validDelivery({ maxChapters }), async (generated: ValidCase) => {
    figures.cases.valid++
    const delivery = structuredClone(generated.delivery)
    delivery.job_id = withUniqueJobId(delivery.job_id, randomUUID())
    const [before] = await rowsOf<{ jobs: number, books: number, dead: number }>(running, sql`
      SELECT (SELECT count(*)::int FROM book_jobs) AS jobs, (SELECT count(*)::int FROM books) AS books,
        (SELECT count(*)::int FROM webhook_dead_letters) AS dead`)
    const answer = await deliver(running.endpoint, Buffer.from(JSON.stringify(delivery)))
    record(figures, answer)
    const problem = await storedExactly(running, generated, delivery, answer, before!)
    if (problem?.partial) figures.partialWrites++
    if (problem) throw new Error(`valid delivery: ${problem.message} (status ${answer.status} ${answer.text.slice(0, 300)})`)
  }), { numRuns: runs, ...(seed === undefined ? {} : { seed }) })
}

async function storedExactly (
  running: RunningApp, generated: ValidCase, delivery: ValidCase['delivery'],
  answer: { status: number, body: Record<string, unknown> }, before: { jobs: number, books: number, dead: number }
): Promise<{ message: string, partial: boolean } | undefined> {
  const book = delivery.book_data
  const [after] = await rowsOf<{ jobs: number, books: number, dead: number }>(running, sql`
    SELECT (SELECT count(*)::int FROM book_jobs) AS jobs, (SELECT count(*)::int FROM books) AS books,
      (SELECT count(*)::int FROM webhook_dead_letters) AS dead`)
  const [job] = await rowsOf<Record<string, unknown>>(running, sql`
    SELECT user_id, status::text AS status, error, input_data, completed_at FROM book_jobs WHERE id = ${delivery.job_id}`)
  const [stored] = await rowsOf<Record<string, unknown>>(running, sql`SELECT *, (extract(epoch FROM generated_at) * 1000)::float8 AS generated_ms FROM books WHERE job_id = ${delivery.job_id}`)
  const chapters = stored
    ? await rowsOf<{ position: number, title: string, description: string, content: string, word_count: number }>(running, sql`
      SELECT position, title, description, content, word_count FROM chapters WHERE book_id = ${stored.id as string} ORDER BY position`)
    : []

  const counted = after!.jobs - before.jobs === 1 && after!.books - before.books === 1 && after!.dead === before.dead &&
    chapters.length === book.chapters.length
  const nothing = after!.jobs === before.jobs && after!.books === before.books && after!.dead === before.dead && !job
  if (!counted) return { message: `rows written: ${JSON.stringify({ before, after, chapters: chapters.length })}`, partial: !nothing }
  if (answer.status !== 200) return { message: `status ${answer.status}`, partial: true }
  if (answer.body.created !== true || answer.body.chaptersCreated !== book.chapters.length || answer.body.bookId !== stored!.id) {
    return { message: `response ${JSON.stringify(answer.body)}`, partial: false }
  }

  const expectJob = { user_id: generated.expectedUser, status: 'COMPLETED', error: null, input_data: { title: book.book_title, topic: book.topic, goal: book.goal } }
  const jobFields = { user_id: job!.user_id, status: job!.status, error: job!.error, input_data: job!.input_data }
  if (!sameJson(jobFields, expectJob) || !job!.completed_at) return { message: 'job row differs', partial: false }

  const differs = [
    ['title', stored!.title, book.book_title], ['topic', stored!.topic, book.topic], ['goal', stored!.goal, book.goal],
    ['user_id', stored!.user_id, generated.expectedUser], ['word_count', stored!.word_count, book.word_count],
    ['chapter_count', stored!.chapter_count, book.chapter_count],
    ['generated_at', stored!.generated_ms, generated.generatedAtInstant],
  ].find(([, actual, expected]) => !sameBytes(actual, expected))
  if (differs) return { message: `books.${differs[0] as string} differs`, partial: false }
  if (!sameJson(stored!.outline, JSON.parse(JSON.stringify(book.outline)))) return { message: 'books.outline differs', partial: false }

  for (const [i, chapter] of chapters.entries()) {
    const sent = book.chapters[i]!
    if (chapter.position !== i + 1 || !sameBytes(chapter.title, sent.title) || !sameBytes(chapter.description, sent.description) ||
      !sameBytes(chapter.content, sent.content)) return { message: `chapter ${i + 1} differs`, partial: false }
    if (chapter.word_count !== (sent.content.match(/\S+/g)?.length ?? 0)) return { message: `chapter ${i + 1} word_count`, partial: false }
  }
  return undefined
}

/** Strings compared as UTF-8 bytes; anything else by value. */
function sameBytes (actual: unknown, expected: unknown): boolean {
  if (typeof expected === 'string') return typeof actual === 'string' && Buffer.from(actual, 'utf8').equals(Buffer.from(expected, 'utf8'))
  return actual === expected
}

/** Deep equality of JSON values regardless of key order (jsonb reorders keys). */
function sameJson (a: unknown, b: unknown): boolean {
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((item, i) => sameJson(item, b[i]))
  }
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keysA = Object.keys(a).sort()
    const keysB = Object.keys(b).sort()
    return sameJson(keysA, keysB) && keysA.every((key) => sameJson((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]))
  }
  return Object.is(a, b) || a === b
}

/** Row counts and a checksum of every row of every table: "the database is unchanged" is this equal. */
async function fingerprint (running: RunningApp): Promise<string> {
  const [row] = await rowsOf<{ fingerprint: string }>(running, sql`
    SELECT concat_ws(' ',
      (SELECT count(*) FROM users), (SELECT count(*) FROM book_jobs), (SELECT count(*) FROM books),
      (SELECT count(*) FROM chapters), (SELECT count(*) FROM webhook_dead_letters),
      md5(concat(
        (SELECT string_agg(t::text, '|' ORDER BY t.id) FROM users t),
        (SELECT string_agg(t::text, '|' ORDER BY t.id) FROM book_jobs t),
        (SELECT string_agg(t::text, '|' ORDER BY t.id) FROM books t),
        (SELECT string_agg(t::text, '|' ORDER BY t.id) FROM chapters t),
        (SELECT string_agg(t::text, '|' ORDER BY t.id) FROM webhook_dead_letters t)))) AS fingerprint`)
  return row!.fingerprint
}

/** The bytes sent and their headers, signed over the case's body with node:crypto, then spoiled as the case says. */
function spoiled (invalid: InvalidCase): { body: Buffer, headers: Record<string, string> } {
  const body = Buffer.from(invalid.body)
  switch (invalid.spoil) {
    case 'stale_timestamp': return { body, headers: signedBytesHeaders(body, { at: new Date(Date.now() - 3_600_000) }) }
    case 'missing_signature': {
      const { 'webhook-signature': _signature, ...unsigned } = signedBytesHeaders(body)
      return { body, headers: unsigned }
    }
    case 'wrong_secret': return { body, headers: signedBytesHeaders(body, { secret: `whsec_${Buffer.alloc(32, 7).toString('base64')}` }) }
    case 'flipped_body_byte': {
      // Signed, then one byte of the body changed in transit.
      const sent = Buffer.from(body)
      sent[sent.length - 2] = sent[sent.length - 2]! ^ 0x01
      return { body: sent, headers: signedBytesHeaders(body) }
    }
    default: return { body, headers: signedBytesHeaders(body) }
  }
}

/** Arbitrary invalid payloads → a 4xx with a JSON error, never a 5xx, and the database unchanged. */
export async function invalidProperty (running: RunningApp, jobIds: string[], runs: number, figures: FuzzFigures, seed?: number): Promise<void> {
  let baseline = await fingerprint(running)
  await fc.assert(fc.asyncProperty(invalidDelivery(jobIds), async (invalid) => {
    figures.cases.invalid++
    figures.invalidKinds[invalid.kind] = (figures.invalidKinds[invalid.kind] ?? 0) + 1
    const { body, headers } = spoiled(invalid)
    const answer = await deliver(running.endpoint, body, headers)
    record(figures, answer)
    const now = await fingerprint(running)
    const changed = now !== baseline
    if (changed) {
      figures.partialWrites++
      // Judge the shrunk cases that follow on their own, not by this case's write.
      baseline = now
    }
    if (answer.status < 400 || answer.status >= 500) throw new Error(`${invalid.kind}: status ${answer.status} ${answer.text.slice(0, 300)}`)
    if (typeof answer.body.error !== 'string') throw new Error(`${invalid.kind}: no JSON error in ${answer.text.slice(0, 200)}`)
    if (invalid.spoil && answer.status !== 401) throw new Error(`${invalid.kind} ${invalid.spoil}: status ${answer.status}, not 401`)
    if (findLeak(answer.text)) throw new Error(`${invalid.kind}: the response leaks ${findLeak(answer.text)}: ${answer.text.slice(0, 300)}`)
    if (changed) throw new Error(`${invalid.kind}: the database changed`)
  }), { numRuns: runs, ...(seed === undefined ? {} : { seed }) })
}

/** Interleavings of completed / failed / redelivered deliveries, concurrently → the contract's final state. */
export async function interleavingProperty (running: RunningApp, runs: number, figures: FuzzFigures, seed?: number): Promise<void> {
  await fc.assert(fc.asyncProperty(interleaving, async (generated) => {
    figures.cases.interleavings++
    const { jobIds, sends } = buildDeliveries(generated)
    const answers = await Promise.all(sends.map((sent) => deliver(running.endpoint, sent.body, signedBytesHeaders(sent.body, { id: sent.webhookId }))))
    answers.forEach((answer) => record(figures, answer))
    const refused = answers.find((answer) => answer.status !== 200)
    if (refused) throw new Error(`a delivery was answered ${refused.status}: ${refused.text.slice(0, 200)}`)
    for (const jobId of jobIds.filter((id) => sends.some((sent) => sent.jobId === id))) {
      const problem = violation(jobId, sends, await storedJob(running, jobId))
      if (problem) {
        figures.partialWrites++
        throw new Error(`job ${jobId}: ${problem}; sent ${JSON.stringify(sends.filter((s) => s.jobId === jobId).map((s) => [s.webhookId, s.status, s.generatedAt, s.chapters?.length]))}`)
      }
    }
  }), { numRuns: runs, ...(seed === undefined ? {} : { seed }) })
}

async function storedJob (running: RunningApp, jobId: string): Promise<StoredJob> {
  const jobs = await rowsOf<StoredJob['job'] & object>(running, sql`
    SELECT status::text AS status, error, applied_webhook_ids[cardinality(applied_webhook_ids)] AS last_applied_id FROM book_jobs WHERE id = ${jobId}`)
  const books = await rowsOf<StoredJob['books'][number]>(running, sql`
    SELECT id, title, (extract(epoch FROM generated_at) * 1000)::float8 AS generated_ms, chapter_count FROM books WHERE job_id = ${jobId}`)
  const chapters = await rowsOf<StoredJob['chapters'][number]>(running, sql`
    SELECT c.position, c.title, c.content, c.description FROM chapters c JOIN books b ON b.id = c.book_id
    WHERE b.job_id = ${jobId} ORDER BY c.position, c.id`)
  return { job: jobs[0], jobRows: jobs.length, books, chapters }
}
