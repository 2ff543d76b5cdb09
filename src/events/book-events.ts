import { Type, type Static } from 'typebox'

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
