import { asc, count, eq, sum } from 'drizzle-orm'
import type { Database } from '../db/client.ts'
import { bookJobs, books, chapters, webhookDeadLetters } from '../db/schema.ts'

/** What the database holds for one job_id (contract section 7, `deliveries show`). Never book text. */
export interface JobReport {
  jobId: string
  job: {
    owner: string
    status: string
    createdAt: Date
    updatedAt: Date
    completedAt: Date | null
    error: string | null
    /** Oldest first; the last is the latest delivery applied. */
    appliedWebhookIds: string[]
  } | null
  book: {
    id: string
    title: string
    generatedAt: Date | null
    createdAt: Date
    updatedAt: Date
    /** Rows in `chapters`, and their word counts as counted by the service. */
    storedChapters: number
    countedWords: number
    /** The sender's own figures (`books.chapter_count`, `books.word_count`). */
    senderChapterCount: number | null
    senderWordCount: number | null
  } | null
  deadLetters: Array<{ id: number, webhookId: string | null, reason: string, receivedAt: Date, replayedAt: Date | null }>
}

export async function readJobReport (db: Database, jobId: string): Promise<JobReport> {
  const [jobRows, bookRows, deadLetters] = await Promise.all([
    db.select().from(bookJobs).where(eq(bookJobs.id, jobId)),
    db.select({
      id: books.id,
      title: books.title,
      generatedAt: books.generatedAt,
      createdAt: books.createdAt,
      updatedAt: books.updatedAt,
      chapterCount: books.chapterCount,
      wordCount: books.wordCount,
    }).from(books).where(eq(books.jobId, jobId)),
    db.select({
      id: webhookDeadLetters.id,
      webhookId: webhookDeadLetters.webhookId,
      reason: webhookDeadLetters.reason,
      receivedAt: webhookDeadLetters.receivedAt,
      replayedAt: webhookDeadLetters.replayedAt,
    }).from(webhookDeadLetters).where(eq(webhookDeadLetters.jobId, jobId)).orderBy(asc(webhookDeadLetters.id)),
  ])
  const [job] = jobRows
  const [book] = bookRows
  let figures = { stored: 0, words: 0 }
  if (book) {
    const [row] = await db.select({ stored: count(), words: sum(chapters.wordCount).mapWith(Number) })
      .from(chapters).where(eq(chapters.bookId, book.id))
    figures = { stored: row?.stored ?? 0, words: row?.words ?? 0 }
  }
  return {
    jobId,
    job: job
      ? {
          owner: job.userId,
          status: job.status,
          createdAt: job.createdAt,
          updatedAt: job.updatedAt,
          completedAt: job.completedAt,
          error: job.error,
          appliedWebhookIds: job.appliedWebhookIds,
        }
      : null,
    book: book
      ? {
          id: book.id,
          title: book.title,
          generatedAt: book.generatedAt,
          createdAt: book.createdAt,
          updatedAt: book.updatedAt,
          storedChapters: figures.stored,
          countedWords: figures.words,
          senderChapterCount: book.chapterCount,
          senderWordCount: book.wordCount,
        }
      : null,
    deadLetters,
  }
}

/** Whether the database knows anything of the job: a row in book_jobs, or a dead letter of it. */
export function knowsJob (report: JobReport): boolean {
  return report.job !== null || report.deadLetters.length > 0
}
