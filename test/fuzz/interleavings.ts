import { randomUUID } from 'node:crypto'
import fc from 'fast-check'
import { completedDelivery, failedDelivery } from '../../scripts/deliveries.ts'
import { FUZZ_USERS } from './valid-delivery.ts'

/**
 * Interleavings of completed / failed / redelivered deliveries of a few job ids, sent all at once.
 * Each delivery's text is unique (its tag), so a book mixing two deliveries' chapters shows.
 */

interface SentDelivery {
  tag: string
  webhookId: string
  jobId: string
  status: 'completed' | 'failed'
  body: string
  /** completed: the instant of generated_at and the chapters sent. */
  generatedAt?: number
  title?: string
  chapters?: Array<{ title: string, content: string, description: string }>
  error?: string
}

interface Event {
  job: number
  kind: 'completed' | 'failed' | 'redeliver'
  minute: number
  chapters: number
  /** For a redelivery: which earlier delivery is sent again (modulo the deliveries so far). */
  of: number
}

export const interleaving = fc.record({
  jobs: fc.integer({ min: 1, max: 3 }),
  events: fc.array(fc.record({
    job: fc.nat(2),
    kind: fc.constantFrom<Event['kind']>('completed', 'completed', 'failed', 'redeliver'),
    // Few distinct minutes: equal generated_at values (ties) happen often.
    minute: fc.integer({ min: 0, max: 3 }),
    chapters: fc.integer({ min: 1, max: 6 }),
    of: fc.nat(),
  }), { minLength: 1, maxLength: 12 }),
})

/** The deliveries of one interleaving case: fresh job ids, each body built once (a redelivery reuses it). */
export function buildDeliveries ({ jobs, events }: { jobs: number, events: Event[] }): { jobIds: string[], sends: SentDelivery[] } {
  const run = randomUUID().slice(0, 8)
  const jobIds = Array.from({ length: jobs }, (_, i) => `interleave-${run}-${i}`)
  const sends: SentDelivery[] = []
  events.forEach((event, index) => {
    const jobId = jobIds[event.job % jobs]!
    const earlier = sends.filter((sent) => sent.jobId === jobId)
    if (event.kind === 'redeliver' && earlier.length > 0) {
      sends.push({ ...earlier[event.of % earlier.length]! })
      return
    }
    const tag = `${run}-d${index}`
    if (event.kind === 'failed') {
      const error = `failure ${tag}`
      const body = JSON.stringify(failedDelivery(jobId, error, FUZZ_USERS[0]))
      sends.push({ tag, webhookId: `msg_${tag}`, jobId, status: 'failed', body, error })
      return
    }
    const generatedAt = Date.UTC(2025, 9, 20, 10, event.minute)
    const chapters = Array.from({ length: event.chapters }, (_, i) => ({
      title: `${tag} chapitre ${i + 1}`,
      content: `# ${tag} / ${i + 1}\n\nTexte « ${tag} » 😊`,
      description: `${tag} description ${i + 1}`,
    }))
    const title = `Livre ${tag}`
    const body = JSON.stringify(completedDelivery({
      jobId,
      userId: FUZZ_USERS[0],
      book: {
        book_title: title,
        topic: tag,
        goal: tag,
        outline: [],
        chapters,
        generated_at: new Date(generatedAt).toISOString(),
        word_count: event.chapters * 7,
        chapter_count: event.chapters,
      },
    }))
    sends.push({ tag, webhookId: `msg_${tag}`, jobId, status: 'completed', body, generatedAt, title, chapters })
  })
  return { jobIds, sends }
}

export interface StoredJob {
  /** `last_applied_id`: the last of the job's applied webhook-ids. */
  job: { status: string, error: string | null, last_applied_id: string | null } | undefined
  jobRows: number
  books: Array<{ id: string, title: string, generated_ms: number, chapter_count: number }>
  chapters: Array<{ position: number, title: string, content: string, description: string }>
}

/**
 * The contract's rules for one job after all its deliveries: one job; if any completed delivery
 * was sent, the job is COMPLETED (never downgraded) with one book whose every field and chapter
 * is the last applied delivery's (the last of the job's applied webhook-ids), which has the latest
 * generated_at; otherwise the job is FAILED with the last applied failure's error and no book.
 * Returns what is wrong, or undefined.
 */
export function violation (jobId: string, sends: SentDelivery[], stored: StoredJob): string | undefined {
  const mine = sends.filter((sent) => sent.jobId === jobId)
  const byId = new Map(mine.map((sent) => [sent.webhookId, sent]))
  if (stored.jobRows !== 1 || !stored.job) return `${stored.jobRows} job rows`
  const last = stored.job.last_applied_id === null ? undefined : byId.get(stored.job.last_applied_id)
  if (!last) return `the last applied webhook-id ${stored.job.last_applied_id} is none of the deliveries sent`

  const completed = mine.filter((sent) => sent.status === 'completed')
  if (completed.length === 0) {
    if (stored.job.status !== 'FAILED') return `status ${stored.job.status} after failures only`
    if (stored.books.length !== 0 || stored.chapters.length !== 0) return 'a book for a job that never completed'
    if (last.status !== 'failed' || stored.job.error !== last.error) return `error ${stored.job.error} is not the last applied failure's`
    return undefined
  }

  if (stored.job.status !== 'COMPLETED') return `status ${stored.job.status} although a completed delivery was applied (downgraded or lost)`
  if (stored.job.error !== null) return 'a COMPLETED job keeps an error'
  if (stored.books.length !== 1) return `${stored.books.length} books`
  if (last.status !== 'completed') return 'the last applied delivery of a COMPLETED job is a failure'
  const latest = Math.max(...completed.map((sent) => sent.generatedAt!))
  const book = stored.books[0]!
  if (last.generatedAt !== latest || book.generated_ms !== latest) return 'the stored book is not the latest generated_at'
  if (book.title !== last.title || book.chapter_count !== last.chapters!.length) return 'book fields are not the last applied delivery\'s'
  const expected = last.chapters!.map((chapter, i) => ({ position: i + 1, ...chapter }))
  if (JSON.stringify(stored.chapters) !== JSON.stringify(expected)) return 'chapters are not exactly the last applied delivery\'s (mixed, missing or extra)'
  return undefined
}
