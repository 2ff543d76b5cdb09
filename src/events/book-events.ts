import { sql, type SQL } from 'drizzle-orm'
import type { FastifyBaseLogger as Logger } from 'fastify'
import { Type, type Static } from 'typebox'
import type { Statements } from '../db/client.ts'

/** The Postgres channel readers LISTEN on (contract section 5, "Notifications to readers"). */
export const BOOK_EVENTS_CHANNEL = 'book_events'

/** What one `book_events` notification carries: a wake-up for readers, sent only at commit. */
export const BookEventSchema = Type.Object({
  event: Type.Union([Type.Literal('book_created'), Type.Literal('book_updated'), Type.Literal('job_failed')]),
  job_id: Type.String(),
  /** Null when the job has no book. */
  book_id: Type.Union([Type.String(), Type.Null()]),
  /** The job's owner. */
  user_id: Type.String(),
  /** Chapters stored now; 0 when none. */
  chapter_count: Type.Integer({ minimum: 0 }),
  /** Null when the delivery carried none (an unsigned development request). */
  webhook_id: Type.Union([Type.String(), Type.Null()]),
})

export type BookEvent = Static<typeof BookEventSchema>

/** Postgres refuses a notification payload of 8,000 bytes or more. */
export const MAX_NOTIFICATION_BYTES = 7_999

/**
 * Tells readers of a change, inside the transaction that makes it: the `pg_notify(…)` call to put
 * in the statement that writes it. Postgres hands the notification to listeners when that
 * transaction commits and drops it if it rolls back. Measured against a notification in its own
 * transaction right after the commit, it costs less (one statement fewer per delivery;
 * docs/PERFORMANCE.md has the figures). Its price is Postgres's cluster-wide notify lock, held
 * from the commit's start through its WAL flush: notifying commits follow one another, at most
 * one per fsync (about 130 µs on this machine's disk: some 7,000 a second).
 */
export function notification (event: BookEvent, log: Logger): SQL {
  let payload = JSON.stringify(event)
  if (Buffer.byteLength(payload) > MAX_NOTIFICATION_BYTES) {
    log.warn({ jobId: event.job_id }, 'book event too large for a notification: sent without its webhook_id')
    payload = JSON.stringify({ ...event, webhook_id: null })
  }
  return sql`pg_notify(${BOOK_EVENTS_CHANNEL}, ${payload})`
}

/** On the embedded database no other process can listen: a written change is logged instead. */
export function logOnEmbedded (db: Statements, event: BookEvent, log: Logger): void {
  if (db.kind === 'embedded') log.info({ bookEvent: event }, 'book event (embedded database: logged, not notified)')
}
