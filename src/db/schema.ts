import { sql } from 'drizzle-orm'
import {
  bigint, index, integer, jsonb, pgEnum, pgTable, text, timestamp, unique,
} from 'drizzle-orm/pg-core'

const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow()
const updatedAt = () => timestamp('updated_at', { withTimezone: true }).notNull().defaultNow()
const generatedId = () => text('id').primaryKey().default(sql`gen_random_uuid()::text`)

export const jobType = pgEnum('job_type', ['BOOK_GENERATION'])
export const jobStatus = pgEnum('job_status', ['PENDING', 'RUNNING', 'COMPLETED', 'FAILED'])

export const users = pgTable('users', {
  id: text('id').primaryKey(),
  createdAt: createdAt(),
})

export const bookJobs = pgTable('book_jobs', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull().references(() => users.id),
  jobType: jobType('job_type').notNull().default('BOOK_GENERATION'),
  status: jobStatus('status').notNull().default('PENDING'),
  inputData: jsonb('input_data'),
  error: text('error'),
  createdAt: createdAt(),
  updatedAt: updatedAt(),
  completedAt: timestamp('completed_at', { withTimezone: true }),
  /** `webhook-id`s of the deliveries applied to this job (the latest 64): a replay of any changes nothing. */
  appliedWebhookIds: text('applied_webhook_ids').array().notNull().default(sql`'{}'::text[]`),
}, (table) => [index('book_jobs_user_id_idx').on(table.userId)])

export const books = pgTable('books', {
  id: generatedId(),
  jobId: text('job_id').notNull().unique().references(() => bookJobs.id),
  userId: text('user_id').notNull().references(() => users.id),
  title: text('title').notNull(),
  topic: text('topic'),
  goal: text('goal'),
  outline: jsonb('outline'),
  wordCount: integer('word_count'),
  chapterCount: integer('chapter_count'),
  generatedAt: timestamp('generated_at', { withTimezone: true }),
  createdAt: createdAt(),
  updatedAt: updatedAt(),
}, (table) => [
  index('books_user_id_created_at_idx').on(table.userId, table.createdAt),
  // Readers catching up after an absence: books changed since a time (docs/DATA.md).
  index('books_updated_at_idx').on(table.updatedAt),
])

export const chapters = pgTable('chapters', {
  id: generatedId(),
  bookId: text('book_id').notNull().references(() => books.id, { onDelete: 'cascade' }),
  /** 1 = first chapter. */
  position: integer('position').notNull(),
  title: text('title').notNull(),
  description: text('description'),
  content: text('content').notNull(),
  /** Counted by the service, unlike books.word_count which is the sender's figure. */
  wordCount: integer('word_count').notNull(),
}, (table) => [unique('chapters_book_id_position_key').on(table.bookId, table.position)])

export const webhookDeadLetters = pgTable('webhook_dead_letters', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  webhookId: text('webhook_id'),
  jobId: text('job_id'),
  reason: text('reason').notNull(),
  payload: jsonb('payload').notNull(),
  receivedAt: timestamp('received_at', { withTimezone: true }).notNull().defaultNow(),
  replayedAt: timestamp('replayed_at', { withTimezone: true }),
}, (table) => [index('webhook_dead_letters_job_id_idx').on(table.jobId)])

export type Book = typeof books.$inferSelect
