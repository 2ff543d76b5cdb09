import { sql } from 'drizzle-orm'
import type { Statements } from '../db/client.ts'

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

export async function readJobReport (db: Statements, jobId: string): Promise<JobReport> {
  const [jobRows, bookRows, deadLetters] = await Promise.all([
    db.rows<NonNullable<JobReport['job']>>(sql`
      SELECT user_id AS owner, status::text AS status, created_at AS "createdAt", updated_at AS "updatedAt",
        completed_at AS "completedAt", error, applied_webhook_ids AS "appliedWebhookIds"
      FROM book_jobs WHERE id = ${jobId}`),
    db.rows<NonNullable<JobReport['book']>>(sql`
      SELECT b.id, b.title, b.generated_at AS "generatedAt", b.created_at AS "createdAt", b.updated_at AS "updatedAt",
        count(c.id)::int AS "storedChapters", coalesce(sum(c.word_count), 0)::int AS "countedWords",
        b.chapter_count AS "senderChapterCount", b.word_count AS "senderWordCount"
      FROM books b LEFT JOIN chapters c ON c.book_id = b.id
      WHERE b.job_id = ${jobId}
      GROUP BY b.id`),
    db.rows<JobReport['deadLetters'][number]>(sql`
      SELECT id::int AS id, webhook_id AS "webhookId", reason, received_at AS "receivedAt", replayed_at AS "replayedAt"
      FROM webhook_dead_letters WHERE job_id = ${jobId} ORDER BY id`),
  ])
  return { jobId, job: jobRows[0] ?? null, book: bookRows[0] ?? null, deadLetters }
}

/** Whether the database knows anything of the job: a row in book_jobs, or a dead letter of it. */
export function knowsJob (report: JobReport): boolean {
  return report.job !== null || report.deadLetters.length > 0
}
