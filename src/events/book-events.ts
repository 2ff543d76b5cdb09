import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger as Logger } from 'fastify'
import { Type, type Static } from 'typebox'
import type { DatabaseHandle } from '../db/client.ts'
import type { DeliveryResult } from '../webhooks/deliver.ts'

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
export type BookEventName = BookEvent['event']

/** Postgres refuses a notification payload of 8,000 bytes or more. */
export const MAX_NOTIFICATION_BYTES = 7_999

/** The notification for a delivery that changed the tables; none for one that changed nothing. */
export function bookEventFor (result: DeliveryResult, webhookId: string | undefined): BookEvent | undefined {
  if (result.outcome !== 'book_created' && result.outcome !== 'book_updated' && result.outcome !== 'job_failed') return undefined
  return {
    event: result.outcome,
    job_id: result.jobId,
    book_id: result.bookId,
    user_id: result.ownerId!,
    chapter_count: result.chaptersCreated,
    webhook_id: webhookId ?? null,
  }
}

/** Sends the notifications of committed changes. */
export interface BookEventPublisher {
  /** Resolves once the notification is sent, or its failure logged: never rejects. */
  publish: (event: BookEvent, log: Logger) => Promise<void>
}

/**
 * Tells readers of a committed change: `pg_notify` in its own one-statement transaction, right
 * after the delivery's commit. Inside the delivery's transaction it would hold Postgres's
 * cluster-wide notify lock through that commit's WAL flush, so every notifying commit would wait
 * for the previous one's fsync; on its own it writes no WAL and holds the lock briefly. The
 * events of deliveries that commit while a notification statement is under way go together in
 * the next one: one round trip for several (docs/PERFORMANCE.md has the figures). A crash between
 * commit and notification loses only the wake-up: readers catch up from the tables. On the
 * embedded database, which no other process can reach, each event is logged instead.
 */
export function bookEventPublisher (db: DatabaseHandle): BookEventPublisher {
  const waiting: Array<{ payload: string, jobId: string, log: Logger, sent: () => void }> = []
  let sending = false

  const sendWaiting = (): void => {
    if (sending || waiting.length === 0) return
    sending = true
    const batch = waiting.splice(0, waiting.length)
    db.rows(sql`SELECT pg_notify(${BOOK_EVENTS_CHANNEL}, payload) FROM json_array_elements_text(${JSON.stringify(batch.map((item) => item.payload))}::json) AS payload`)
      .catch((err: unknown) => {
        for (const item of batch) {
          item.log.warn({ jobId: item.jobId, code: (err as { code?: string }).code }, 'book event not sent: readers catch up from the tables')
        }
      })
      .finally(() => {
        sending = false
        for (const item of batch) item.sent()
        sendWaiting()
      })
  }

  return {
    publish: (event, log) => {
      if (db.kind === 'embedded') {
        log.info({ bookEvent: event }, 'book event (embedded database: logged, not notified)')
        return Promise.resolve()
      }
      let payload = JSON.stringify(event)
      if (Buffer.byteLength(payload) > MAX_NOTIFICATION_BYTES) {
        log.warn({ jobId: event.job_id }, 'book event too large for a notification: sent without its webhook_id')
        payload = JSON.stringify({ ...event, webhook_id: null })
      }
      return new Promise((resolve) => {
        waiting.push({ payload, jobId: event.job_id, log, sent: resolve })
        sendWaiting()
      })
    },
  }
}
