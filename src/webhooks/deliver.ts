import { randomUUID } from 'node:crypto'
import { sql, type SQL } from 'drizzle-orm'
import type { FastifyBaseLogger as Logger } from 'fastify'
import { queryBuilder, type Statements, type Transaction } from '../db/client.ts'
import { logOnEmbedded, notification, type BookEvent } from '../events/book-events.ts'
import { webhookDeadLetters } from '../db/schema.ts'
import { toTimestamptz, type BookData, type CompletedDelivery, type Delivery } from './payload.ts'
import { countWords } from './word-count.ts'

export type DeliveryOutcome =
  | 'book_created' // completed: this delivery inserted the book
  | 'book_updated' // completed: a re-delivery replaced the book's content
  | 'stale_ignored' // completed, but older than the stored book: nothing changed
  | 'job_failed' // failed: the job is FAILED
  | 'failure_ignored' // failed, but the job is already COMPLETED: nothing changed
  | 'duplicate_ignored' // a webhook-id already applied to the job (a retry or a replay): nothing changed
  | 'dead_lettered' // no user to own a new job: kept in webhook_dead_letters, answered 422

interface DeliveryResult {
  outcome: DeliveryOutcome
  jobId: string
  /** The job's owner; null for a dead letter (no job). */
  ownerId: string | null
  bookId: string | null
  /** True only when this delivery inserted the book (for `failed`, the job). */
  created: boolean
  /** Chapters in the stored book. */
  chaptersCreated: number
  /** `books.word_count`, the sender's figure. */
  wordCount: number | null
  /** Why a dead-lettered delivery could not be applied. */
  reason?: string
}

export interface DeliveryContext {
  webhookId: string | undefined
  defaultUserId: string | undefined
  /** Development only: a payload without a user falls back to the oldest user (contract 4.1). */
  fallbackToOldestUser: boolean
  /** Jobs this process has seen lately: their retries skip the statement that creates a job. */
  recentJobs?: RecentJobs
  log: Logger
}

/**
 * The job ids of the latest deliveries, a hint only: the one statement that creates a new job
 * sends the whole book, and for a job that exists (a sender's retry, a re-delivery) it writes
 * nothing and the book is sent again in the transaction that follows. Correctness never depends
 * on it: a job missing from here takes that first statement, which then changes nothing.
 */
export class RecentJobs {
  readonly #ids = new Set<string>()
  constructor (readonly capacity = 4096) {}
  has (jobId: string): boolean { return this.#ids.has(jobId) }
  add (jobId: string): void {
    this.#ids.delete(jobId)
    this.#ids.add(jobId)
    if (this.#ids.size > this.capacity) this.#ids.delete(this.#ids.values().next().value!)
  }
}

interface LockedJob { user_id: string, status: string, /** This webhook-id was applied to the job before. */ replayed: boolean }

/**
 * Contract section 4. A job seen for the first time is created with its book and chapters in one
 * statement, committed on its own: no other delivery can have written to a job that did not
 * exist. Otherwise, in one transaction, the job's row lock is taken first (statement 1) and the
 * writes follow in a later statement with a fresh snapshot, so concurrent deliveries of one job,
 * in one process or several, serialize on that row. Whatever changes the tables notifies readers
 * in the same transaction (contract section 5): they hear of it when it commits.
 */
export async function applyDelivery (db: Statements, delivery: Delivery, context: DeliveryContext): Promise<DeliveryResult> {
  const ownerId = await resolveOwner(db, delivery, context)
  // Counted once, for whichever statement writes them.
  const chapters = delivery.status === 'completed' && delivery.book_data ? chapterRows(delivery.job_id, delivery.book_data, context.log) : undefined
  const seenBefore = context.recentJobs?.has(delivery.job_id) ?? false
  context.recentJobs?.add(delivery.job_id)
  const created = ownerId === undefined || seenBefore ? undefined : await createJob(db, delivery, ownerId, chapters, context)
  if (created) return created

  return db.transaction(async (tx) => {
    let job = await lockJob(tx, delivery.job_id, context.webhookId)
    if (!job) {
      // No job yet, and none was created above: its owner is not in `users`, a concurrent
      // delivery of the job was inserting it and has since committed or rolled back, or this
      // process saw the job id lately in a delivery that did not create it.
      const createdNow = ownerId === undefined ? undefined : await createJob(tx, delivery, ownerId, chapters, context)
      if (createdNow) return createdNow
      job = await lockJob(tx, delivery.job_id, context.webhookId)
      if (!job) return deadLetter(tx, delivery, ownerId, context)
    }

    if (job.replayed) return unchanged(tx, 'duplicate_ignored', delivery.job_id, job.user_id)

    if (delivery.user_id !== undefined && delivery.user_id !== job.user_id) {
      context.log.warn({ jobId: delivery.job_id, jobUserId: job.user_id, payloadUserId: delivery.user_id },
        'payload user_id differs from the job owner; the book stays with the job owner')
    }

    if (chapters) return writeBook(tx, delivery as CompletedDelivery, job.user_id, chapters, context)
    if (job.status === 'COMPLETED') return unchanged(tx, 'failure_ignored', delivery.job_id, job.user_id)
    return recordFailure(tx, delivery, job.user_id, context)
  })
}

/** 4.1: the payload's user, else DEFAULT_USER_ID, else (development only) the oldest user. */
async function resolveOwner (db: Statements, delivery: Delivery, context: DeliveryContext): Promise<string | undefined> {
  const named = delivery.user_id ?? context.defaultUserId
  if (named !== undefined || !context.fallbackToOldestUser) return named
  const [oldest] = await db.rows<{ id: string }>(sql`SELECT id FROM users ORDER BY created_at, id LIMIT 1`)
  return oldest?.id
}

/**
 * 4.2 and 4.3 for a job not in `book_jobs`: inserts it already in its final state, with its book
 * and chapters, in one statement. Returns undefined, having written nothing, when the job exists
 * (ON CONFLICT waits for a concurrent inserter's commit) or its owner is not in `users`.
 */
async function createJob (db: Statements, delivery: Delivery, ownerId: string, chapters: SQL | undefined, context: DeliveryContext): Promise<DeliveryResult | undefined> {
  const book = chapters ? delivery.book_data : undefined
  const insertJob = sql`
    INSERT INTO book_jobs (id, user_id, job_type, status, input_data, error, completed_at, applied_webhook_ids)
    SELECT ${delivery.job_id}, users.id, 'BOOK_GENERATION', ${book ? 'COMPLETED' : 'FAILED'}::job_status,
      ${JSON.stringify(book ? { title: book.book_title, topic: book.topic, goal: book.goal } : {})}::jsonb,
      ${book ? null : delivery.error ?? null}::text, ${book ? sql`now()` : sql`NULL`},
      array_remove(ARRAY[${context.webhookId ?? null}::text], NULL)
    FROM users WHERE users.id = ${ownerId}
    ON CONFLICT (id) DO NOTHING
    RETURNING id, user_id`

  if (!book || !chapters) {
    const failed: DeliveryResult = { outcome: 'job_failed', jobId: delivery.job_id, ownerId, bookId: null, created: true, chaptersCreated: 0, wordCount: null }
    const event = bookEvent(failed, context)
    const [job] = await db.rows<{ id: string }>(sql`WITH job AS (${insertJob}) SELECT id, ${notification(event, context.log)} FROM job`)
    if (!job) return undefined
    logOnEmbedded(db, event, context.log)
    return failed
  }

  const created: DeliveryResult = { outcome: 'book_created', jobId: delivery.job_id, ownerId, bookId: randomUUID(), created: true, chaptersCreated: book.chapters.length, wordCount: book.word_count }
  const event = bookEvent(created, context)
  const [written] = await db.rows<{ id: string }>(sql`
    WITH job AS (${insertJob}),
    book AS (
      INSERT INTO books (id, job_id, user_id, title, topic, goal, outline, word_count, chapter_count, generated_at)
      SELECT ${created.bookId}, job.id, job.user_id, ${book.book_title}, ${book.topic}, ${book.goal}, ${JSON.stringify(book.outline)}::jsonb,
        ${book.word_count}::int, ${book.chapter_count}::int, ${toTimestamptz(book.generated_at)}::timestamptz
      FROM job
      RETURNING id
    ), ${insertChapters(chapters)}
    )
    SELECT id, ${notification(event, context.log)} FROM book`)
  if (!written) return undefined
  logOnEmbedded(db, event, context.log)
  return created
}

/** 4.2 for a job that exists: its row lock, held until the transaction ends. */
async function lockJob (tx: Transaction, jobId: string, webhookId: string | undefined): Promise<LockedJob | undefined> {
  const [job] = await tx.rows<LockedJob>(sql`
    SELECT user_id, status::text AS status, coalesce(${webhookId ?? null}::text = ANY(applied_webhook_ids), false) AS replayed
    FROM book_jobs WHERE id = ${jobId} FOR UPDATE`)
  return job
}

/** 4.3 on a locked job: upsert the book unless it is newer, replace its chapters in place, complete the job. */
async function writeBook (tx: Transaction, delivery: CompletedDelivery, ownerId: string, chapters: SQL, context: DeliveryContext): Promise<DeliveryResult> {
  const book = delivery.book_data
  const [written] = await tx.rows<{ id: string, inserted: boolean }>(sql`
    WITH book AS (
      INSERT INTO books (job_id, user_id, title, topic, goal, outline, word_count, chapter_count, generated_at)
      VALUES (${delivery.job_id}, ${ownerId}, ${book.book_title}, ${book.topic}, ${book.goal},
        ${JSON.stringify(book.outline)}::jsonb, ${book.word_count}::int, ${book.chapter_count}::int,
        ${toTimestamptz(book.generated_at)}::timestamptz)
      ON CONFLICT (job_id) DO UPDATE SET
        title = excluded.title, topic = excluded.topic, goal = excluded.goal, outline = excluded.outline,
        word_count = excluded.word_count, chapter_count = excluded.chapter_count,
        generated_at = excluded.generated_at, updated_at = now()
      WHERE books.generated_at IS NULL OR books.generated_at <= excluded.generated_at
      RETURNING id, (xmax = 0) AS inserted
    ), ${insertChapters(chapters)}
      ON CONFLICT (book_id, position) DO UPDATE SET
        title = excluded.title, description = excluded.description,
        content = excluded.content, word_count = excluded.word_count
      WHERE (chapters.title, chapters.description, chapters.content)
        IS DISTINCT FROM (excluded.title, excluded.description, excluded.content)
    ), removed AS (
      DELETE FROM chapters WHERE book_id = (SELECT id FROM book) AND position > ${book.chapters.length}::int
    ), completed AS (
      UPDATE book_jobs SET status = 'COMPLETED', error = NULL,
        completed_at = coalesce(completed_at, now()), updated_at = now(), ${recordApplied(context.webhookId)}
      WHERE id = ${delivery.job_id} AND EXISTS (SELECT 1 FROM book)
    )
    SELECT id, inserted FROM book`)

  if (!written) return unchanged(tx, 'stale_ignored', delivery.job_id, ownerId)
  return notified(tx, {
    outcome: written.inserted ? 'book_created' : 'book_updated',
    jobId: delivery.job_id,
    ownerId,
    bookId: written.id,
    created: written.inserted,
    chaptersCreated: book.chapters.length,
    wordCount: book.word_count,
  }, context)
}

/** 4.3 `failed` on a locked job that is not COMPLETED. */
async function recordFailure (tx: Transaction, delivery: Delivery, ownerId: string, context: DeliveryContext): Promise<DeliveryResult> {
  await tx.rows(sql`
    UPDATE book_jobs SET status = 'FAILED', error = ${delivery.error ?? null}, updated_at = now(), ${recordApplied(context.webhookId)}
    WHERE id = ${delivery.job_id}`)
  const stored = await storedBook(tx, delivery.job_id)
  return notified(tx, { outcome: 'job_failed', jobId: delivery.job_id, ownerId, bookId: stored?.id ?? null, created: false, chaptersCreated: stored?.chapters ?? 0, wordCount: stored?.word_count ?? null }, context)
}

/** What readers hear of a change (contract section 5). */
function bookEvent (result: DeliveryResult, context: DeliveryContext): BookEvent {
  return {
    event: result.outcome as BookEvent['event'],
    job_id: result.jobId,
    book_id: result.bookId,
    user_id: result.ownerId!,
    chapter_count: result.chaptersCreated,
    webhook_id: context.webhookId ?? null,
  }
}

/** Notifies readers of a change already written in this transaction, then returns it. */
async function notified (tx: Transaction, result: DeliveryResult, context: DeliveryContext): Promise<DeliveryResult> {
  const event = bookEvent(result, context)
  await tx.rows(sql`SELECT ${notification(event, context.log)}`)
  logOnEmbedded(tx, event, context.log)
  return result
}

/** A delivery that changes nothing is answered with the stored book's figures. */
async function unchanged (tx: Transaction, outcome: DeliveryOutcome, jobId: string, ownerId: string): Promise<DeliveryResult> {
  const stored = await storedBook(tx, jobId)
  tx.commitWithoutFlush()
  return { outcome, jobId, ownerId, bookId: stored?.id ?? null, created: false, chaptersCreated: stored?.chapters ?? 0, wordCount: stored?.word_count ?? null }
}

/** 4.1: no user can own the new job. The delivery is kept, and answered 422. */
async function deadLetter (tx: Transaction, delivery: Delivery, ownerId: string | undefined, context: DeliveryContext): Promise<DeliveryResult> {
  const reason = ownerId === undefined
    ? 'no user: the payload has no user_id and DEFAULT_USER_ID is not set'
    : `user ${JSON.stringify(ownerId)} does not exist`
  await tx.rows(queryBuilder.insert(webhookDeadLetters).values({ webhookId: context.webhookId ?? null, jobId: delivery.job_id, reason, payload: delivery }))
  return { outcome: 'dead_lettered', jobId: delivery.job_id, ownerId: null, bookId: null, created: false, chaptersCreated: 0, wordCount: null, reason }
}

async function storedBook (tx: Transaction, jobId: string): Promise<{ id: string, word_count: number | null, chapters: number } | undefined> {
  const [stored] = await tx.rows<{ id: string, word_count: number | null, chapters: number }>(sql`
    SELECT b.id, b.word_count, (SELECT count(*)::int FROM chapters c WHERE c.book_id = b.id) AS chapters
    FROM books b WHERE b.job_id = ${jobId}`)
  return stored
}

/** The chapters as one VALUES list, each with the service's word count; sender figures that differ are logged. */
function chapterRows (jobId: string, book: BookData, log: Logger): SQL {
  const rows: SQL[] = []
  let countedWords = 0
  for (let i = 0; i < book.chapters.length; i++) {
    const chapter = book.chapters[i]!
    const words = countWords(chapter.content)
    countedWords += words
    rows.push(sql`(${i + 1}::int, ${chapter.title}::text, ${chapter.description}::text, ${chapter.content}::text, ${words}::int)`)
  }
  if (book.chapter_count !== book.chapters.length || book.word_count !== countedWords) {
    log.info({
      jobId,
      senderChapterCount: book.chapter_count,
      chaptersSent: book.chapters.length,
      senderWordCount: book.word_count,
      countedWordCount: countedWords,
    }, 'sender figures differ from the chapters sent (stored as sent)')
  }
  return sql.join(rows, sql`, `)
}

/** CTEs writing the chapters into the book of the `book` CTE; an ON CONFLICT clause may follow. */
function insertChapters (chapters: SQL): SQL {
  return sql`incoming (position, title, description, content, word_count) AS (
      VALUES ${chapters}
    ), chapters_written AS (
      INSERT INTO chapters (book_id, position, title, description, content, word_count)
      SELECT book.id, incoming.position, incoming.title, incoming.description, incoming.content, incoming.word_count
      FROM book CROSS JOIN incoming`
}

/** How many applied webhook-ids a job remembers; a sender retries one delivery, not 64 others between. */
const APPLIED_IDS_KEPT = 64

/** The SET item of an applied delivery: its id joins the remembered ones (the latest last). */
function recordApplied (webhookId: string | undefined): SQL {
  const id = webhookId ?? null
  return sql`applied_webhook_ids = CASE WHEN ${id}::text IS NULL THEN applied_webhook_ids
          ELSE (applied_webhook_ids || ${id}::text)[greatest(1, cardinality(applied_webhook_ids) - ${sql.raw(String(APPLIED_IDS_KEPT - 2))}):] END`
}
