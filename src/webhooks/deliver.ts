import { createHash } from 'node:crypto'
import { sql, type SQL } from 'drizzle-orm'
import { PgDialect } from 'drizzle-orm/pg-core'
import type { FastifyBaseLogger as Logger } from 'fastify'
import { queryRows, type Database } from '../db/client.ts'
import type { BookData, CompletedDelivery, Delivery } from './payload.ts'
import { toTimestamptz } from './payload.ts'
import { countWords } from './word-count.ts'

export type DeliveryOutcome =
  | 'book_created' // completed: this delivery inserted the book
  | 'book_updated' // completed: a re-delivery replaced the book's content
  | 'stale_ignored' // completed, but older than the stored book: nothing changed
  | 'job_failed' // failed: the job is FAILED
  | 'failure_ignored' // failed, but the job is already COMPLETED: nothing changed
  | 'duplicate_ignored' // a webhook-id already applied to the job (a retry or a replay): nothing changed
  | 'dead_lettered' // no user to own a new job: kept in webhook_dead_letters, answered 422

export interface DeliveryResult {
  outcome: DeliveryOutcome
  jobId: string
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
  /**
   * Send the statements as named prepared statements (parsed and planned once per connection).
   * Unset means unnamed: callers other than the route (CLIs, replays) need not know about it.
   */
  preparedStatements?: boolean
  log: Logger
}

type Transaction = Parameters<Parameters<Database['transaction']>[0]>[0]

interface JobRow { user_id: string, status: string, created: boolean, /** This webhook-id was applied to the job before. */ replayed: boolean }
interface BookFigures { id: string, word_count: number | null, chapters: number }

const dialect = new PgDialect()

/**
 * Statement texts depend only on the chapter count, so a name per text lets Postgres parse and
 * plan each once per connection: that halves the server's CPU for a 10-chapter delivery. Past
 * this many distinct texts (unusual chapter counts) statements go unnamed rather than piling up
 * in every connection.
 */
const MAX_NAMED_STATEMENTS = 128
const statementNames = new Map<string, string>()

function statementName (text: string): string | undefined {
  let name = statementNames.get(text)
  if (name === undefined && statementNames.size < MAX_NAMED_STATEMENTS) {
    name = `bcw_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`
    statementNames.set(text, name)
  }
  return name
}

async function rows<T> (tx: Transaction, prepared: boolean | undefined, query: SQL): Promise<T[]> {
  if (!prepared) return queryRows<T>(tx, query)
  const compiled = dialect.sqlToQuery(query)
  // The public session API takes a statement name; PGlite ignores it.
  const statement = tx._.session.prepareQuery(compiled, undefined, statementName(compiled.sql), false)
  return (await statement.execute() as unknown as { rows: T[] }).rows
}

/**
 * Contract section 4 in one transaction. Every writer of a job's book first holds the job's row
 * lock (statement 1) and writes in a later statement (fresh snapshot), so concurrent deliveries
 * of one job, in one process or several, serialize on that row.
 */
export async function applyDelivery (db: Database, delivery: Delivery, context: DeliveryContext): Promise<DeliveryResult> {
  return db.transaction(async (tx) => {
    const candidateUserId = delivery.user_id ?? context.defaultUserId ?? null
    const job = await lockOrCreateJob(tx, delivery, candidateUserId, context)

    if (!job) {
      const reason = candidateUserId === null
        ? 'no user: the payload has no user_id and DEFAULT_USER_ID is not set'
        : `user ${JSON.stringify(candidateUserId)} does not exist`
      await rows(tx, context.preparedStatements, sql`
        INSERT INTO webhook_dead_letters (webhook_id, job_id, reason, payload)
        VALUES (${context.webhookId ?? null}, ${delivery.job_id}, ${reason}, ${JSON.stringify(delivery)}::jsonb)`)
      return { outcome: 'dead_lettered', jobId: delivery.job_id, bookId: null, created: false, chaptersCreated: 0, wordCount: null, reason }
    }

    if (job.replayed) {
      const stored = await bookFigures(tx, delivery.job_id, context, { changedNothing: true })
      return { outcome: 'duplicate_ignored', jobId: delivery.job_id, bookId: stored?.id ?? null, created: false, chaptersCreated: stored?.chapters ?? 0, wordCount: stored?.word_count ?? null }
    }

    if (!job.created && delivery.user_id !== undefined && delivery.user_id !== job.user_id) {
      context.log.warn({ jobId: delivery.job_id, jobUserId: job.user_id, payloadUserId: delivery.user_id },
        'payload user_id differs from the job owner; the book stays with the job owner')
    }

    return delivery.status === 'completed'
      ? writeBook(tx, delivery as CompletedDelivery, job, context)
      : recordFailure(tx, delivery, job, context)
  })
}

/**
 * Statement 1: lock the job, or insert it already in its final state. Returns undefined when the
 * job does not exist and no user can own it.
 */
async function lockOrCreateJob (tx: Transaction, delivery: Delivery, candidateUserId: string | null, context: DeliveryContext): Promise<JobRow | undefined> {
  const book = delivery.book_data
  const completed = delivery.status === 'completed'
  const inputData = completed && book ? { title: book.book_title, topic: book.topic, goal: book.goal } : {}
  const [job] = await rows<JobRow>(tx, context.preparedStatements, sql`
    WITH existing AS (
      SELECT user_id, status, ${isReplay(context.webhookId)} AS replayed FROM book_jobs WHERE id = ${delivery.job_id} FOR UPDATE
    ), owner AS (
      SELECT id FROM users
      WHERE id = coalesce(${candidateUserId}::text,
        CASE WHEN ${context.fallbackToOldestUser}::boolean THEN (SELECT id FROM users ORDER BY created_at, id LIMIT 1) END)
    ), created AS (
      INSERT INTO book_jobs (id, user_id, job_type, status, input_data, error, completed_at, last_webhook_id, applied_webhook_ids)
      SELECT ${delivery.job_id}, owner.id, 'BOOK_GENERATION', ${completed ? 'COMPLETED' : 'FAILED'}::job_status,
        ${JSON.stringify(inputData)}::jsonb, ${completed ? null : delivery.error ?? null}::text,
        CASE WHEN ${completed}::boolean THEN now() END, ${context.webhookId ?? null}::text,
        array_remove(ARRAY[${context.webhookId ?? null}::text], NULL)
      FROM owner WHERE NOT EXISTS (SELECT 1 FROM existing)
      ON CONFLICT (id) DO NOTHING
      RETURNING user_id, status
    )
    SELECT user_id, status::text AS status, false AS created, replayed FROM existing
    UNION ALL
    SELECT user_id, status::text AS status, true AS created, false AS replayed FROM created`)
  if (job) return job

  // Nothing came back: another transaction inserted the job first (ON CONFLICT waited for it to
  // commit), or there is no user. A new statement sees the committed job; lock it.
  const [existing] = await rows<JobRow>(tx, context.preparedStatements, sql`
    SELECT user_id, status::text AS status, false AS created, ${isReplay(context.webhookId)} AS replayed
    FROM book_jobs WHERE id = ${delivery.job_id} FOR UPDATE`)
  return existing
}

/** Statement 2: upsert the book, replace its chapters in place, complete the job. */
async function writeBook (tx: Transaction, delivery: CompletedDelivery, job: JobRow, context: DeliveryContext): Promise<DeliveryResult> {
  const book = delivery.book_data
  const chapterRows = book.chapters.map((chapter, index) => {
    const words = countWords(chapter.content)
    return { words, values: sql`(${index + 1}::int, ${chapter.title}::text, ${chapter.description}::text, ${chapter.content}::text, ${words}::int)` }
  })
  logSenderFigures(delivery.job_id, book, chapterRows.reduce((sum, row) => sum + row.words, 0), context.log)

  const [written] = await rows<{ id: string, inserted: boolean }>(tx, context.preparedStatements, sql`
    WITH book AS (
      INSERT INTO books (job_id, user_id, title, topic, goal, outline, word_count, chapter_count, generated_at)
      VALUES (${delivery.job_id}, ${job.user_id}, ${book.book_title}, ${book.topic}, ${book.goal},
        ${JSON.stringify(book.outline)}::jsonb, ${book.word_count}::int, ${book.chapter_count}::int,
        ${toTimestamptz(book.generated_at)}::timestamptz)
      ON CONFLICT (job_id) DO UPDATE SET
        title = excluded.title, topic = excluded.topic, goal = excluded.goal, outline = excluded.outline,
        word_count = excluded.word_count, chapter_count = excluded.chapter_count,
        generated_at = excluded.generated_at, updated_at = now()
      WHERE books.generated_at IS NULL OR books.generated_at <= excluded.generated_at
      RETURNING id, (xmax = 0) AS inserted
    ), incoming (position, title, description, content, word_count) AS (
      VALUES ${sql.join(chapterRows.map((row) => row.values), sql`, `)}
    ), upserted AS (
      INSERT INTO chapters (book_id, position, title, description, content, word_count)
      SELECT book.id, incoming.position, incoming.title, incoming.description, incoming.content, incoming.word_count
      FROM book CROSS JOIN incoming
      ON CONFLICT (book_id, position) DO UPDATE SET
        title = excluded.title, description = excluded.description,
        content = excluded.content, word_count = excluded.word_count
      WHERE (chapters.title, chapters.description, chapters.content)
        IS DISTINCT FROM (excluded.title, excluded.description, excluded.content)
    ), removed AS (
      DELETE FROM chapters WHERE book_id = (SELECT id FROM book) AND position > ${chapterRows.length}::int
    ), completed AS (
      UPDATE book_jobs SET status = 'COMPLETED', error = NULL,
        completed_at = coalesce(completed_at, now()), updated_at = now(),
        ${recordApplied(context.webhookId)}
      WHERE id = ${delivery.job_id} AND NOT ${job.created}::boolean AND EXISTS (SELECT 1 FROM book)
    )
    SELECT id, inserted FROM book`)

  if (!written) {
    const stored = await bookFigures(tx, delivery.job_id, context, { changedNothing: true })
    return { outcome: 'stale_ignored', jobId: delivery.job_id, bookId: stored?.id ?? null, created: false, chaptersCreated: stored?.chapters ?? 0, wordCount: stored?.word_count ?? null }
  }
  return {
    outcome: written.inserted ? 'book_created' : 'book_updated',
    jobId: delivery.job_id,
    bookId: written.id,
    created: written.inserted,
    chaptersCreated: chapterRows.length,
    wordCount: book.word_count,
  }
}

/** `failed`: mark the job FAILED unless it is already COMPLETED (never downgraded). */
async function recordFailure (tx: Transaction, delivery: Delivery, job: JobRow, context: DeliveryContext): Promise<DeliveryResult> {
  const downgrade = job.status === 'COMPLETED'
  if (!job.created && !downgrade) {
    await rows(tx, context.preparedStatements, sql`
      UPDATE book_jobs SET status = 'FAILED', error = ${delivery.error ?? null}, updated_at = now(),
        ${recordApplied(context.webhookId)}
      WHERE id = ${delivery.job_id}`)
  }
  const stored = job.created ? undefined : await bookFigures(tx, delivery.job_id, context, { changedNothing: downgrade })
  return {
    outcome: downgrade ? 'failure_ignored' : 'job_failed',
    jobId: delivery.job_id,
    bookId: stored?.id ?? null,
    created: job.created,
    chaptersCreated: stored?.chapters ?? 0,
    wordCount: stored?.word_count ?? null,
  }
}

/**
 * The stored book's figures. When this transaction changed nothing (it only locked the job row),
 * its commit need not wait for the WAL flush: losing it in a crash loses nothing. Waiting would
 * keep the row lock over an fsync, so sender retries of one job would queue one fsync each.
 */
async function bookFigures (tx: Transaction, jobId: string, context: DeliveryContext, options: { changedNothing: boolean }): Promise<BookFigures | undefined> {
  // One row even without a book: the LEFT JOIN keeps the set_config row.
  const [figures] = await rows<{ id: string | null, word_count: number | null, chapters: number }>(tx, context.preparedStatements, sql`
    SELECT b.id, b.word_count, (SELECT count(*)::int FROM chapters c WHERE c.book_id = b.id) AS chapters, relaxed.setting
    FROM (SELECT CASE WHEN ${options.changedNothing}::boolean THEN set_config('synchronous_commit', 'off', true) END AS setting) AS relaxed
    LEFT JOIN books b ON b.job_id = ${jobId}`)
  return figures?.id ? { id: figures.id, word_count: figures.word_count, chapters: figures.chapters } : undefined
}

/** How many applied webhook-ids a job remembers; a sender retries one delivery, not 64 others between. */
const APPLIED_IDS_KEPT = 64

function isReplay (webhookId: string | undefined): SQL {
  return sql`coalesce(${webhookId ?? null}::text = ANY(applied_webhook_ids), false)`
}

/** SET items of an applied delivery: its id becomes the last one and joins the remembered ones. */
function recordApplied (webhookId: string | undefined): SQL {
  const id = webhookId ?? null
  return sql`last_webhook_id = ${id}::text,
        applied_webhook_ids = CASE WHEN ${id}::text IS NULL THEN applied_webhook_ids
          ELSE (applied_webhook_ids || ${id}::text)[greatest(1, cardinality(applied_webhook_ids) - ${sql.raw(String(APPLIED_IDS_KEPT - 2))}):] END`
}

function logSenderFigures (jobId: string, book: BookData, countedWords: number, log: Logger): void {
  if (book.chapter_count !== book.chapters.length || book.word_count !== countedWords) {
    log.info({
      jobId,
      senderChapterCount: book.chapter_count,
      chaptersSent: book.chapters.length,
      senderWordCount: book.word_count,
      countedWordCount: countedWords,
    }, 'sender figures differ from the chapters sent (stored as sent)')
  }
}
