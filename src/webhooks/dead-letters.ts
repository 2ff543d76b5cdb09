import { eq, sql } from 'drizzle-orm'
import { queryBuilder, type Statements } from '../db/client.ts'
import { webhookDeadLetters } from '../db/schema.ts'
import { PayloadError } from '../errors.ts'
import { applyDelivery, type DeliveryContext, type DeliveryOutcome } from './deliver.ts'
import { validateDelivery, type Delivery } from './payload.ts'

/**
 * Dead letters you can act on: list them, and replay a stored delivery through `applyDelivery`
 * (the route's own code path) once whatever was missing (usually the user) exists.
 */

interface DeadLetterSummary {
  id: number
  webhookId: string | null
  jobId: string | null
  reason: string
  receivedAt: string
  replayedAt: string | null
}

type ReplayOutcome =
  | Exclude<DeliveryOutcome, 'dead_lettered'> // applied (or found already applied): marked replayed
  | 'already_replayed' // replayed before: nothing done
  | 'not_found'
  | 'still_unapplicable' // still no user to own the job: nothing written, stays pending
  | 'invalid_payload' // the stored payload no longer passes validation: stays pending

export interface ReplayResult {
  id: number
  jobId: string | null
  outcome: ReplayOutcome
  reason?: string
}

export type ReplayContext = Omit<DeliveryContext, 'webhookId'>

interface LetterRow { id: number, webhook_id: string | null, job_id: string | null, payload: unknown, replayed_at: string | null }

/** Oldest first; payloads are not listed (they hold book text). */
export async function listDeadLetters (db: Statements, options: { pendingOnly?: boolean } = {}): Promise<DeadLetterSummary[]> {
  const rows = await db.rows<{ id: number, webhook_id: string | null, job_id: string | null, reason: string, received_at: string, replayed_at: string | null }>(sql`
    SELECT id::int AS id, webhook_id, job_id, reason, received_at::text AS received_at, replayed_at::text AS replayed_at
    FROM webhook_dead_letters
    WHERE ${options.pendingOnly ? sql`replayed_at IS NULL` : sql`true`}
    ORDER BY id`)
  return rows.map((row) => ({
    id: row.id,
    webhookId: row.webhook_id,
    jobId: row.job_id,
    reason: row.reason,
    receivedAt: row.received_at,
    replayedAt: row.replayed_at,
  }))
}

class StillUnapplicable extends Error {}

/**
 * Re-applies one dead letter and marks it replayed, in one transaction: the letter's row lock
 * makes concurrent replays of it apply once, and a replay that still cannot be applied is rolled
 * back to a savepoint, so it writes no second dead letter and leaves this one pending. The stored
 * webhook-id is reused: a later retry of the same delivery by the sender is then a duplicate.
 */
export async function replayDeadLetter (db: Statements, id: number, context: ReplayContext): Promise<ReplayResult> {
  return db.transaction(async (tx): Promise<ReplayResult> => {
    const [letter] = await tx.rows<LetterRow>(sql`
      SELECT id::int AS id, webhook_id, job_id, payload, replayed_at::text AS replayed_at
      FROM webhook_dead_letters WHERE id = ${id} FOR UPDATE`)
    if (!letter) return { id, jobId: null, outcome: 'not_found' }
    if (letter.replayed_at !== null) return { id, jobId: letter.job_id, outcome: 'already_replayed' }

    let delivery: Delivery
    try {
      delivery = validateDelivery(letter.payload)
    } catch (err) {
      if (err instanceof PayloadError) return { id, jobId: letter.job_id, outcome: 'invalid_payload', reason: err.message }
      throw err
    }

    let applied
    try {
      applied = await tx.transaction(async (savepoint) => {
        const result = await applyDelivery(savepoint, delivery, { ...context, webhookId: letter.webhook_id ?? undefined })
        if (result.outcome === 'dead_lettered') throw new StillUnapplicable(result.reason)
        return result
      })
    } catch (err) {
      if (err instanceof StillUnapplicable) return { id, jobId: letter.job_id, outcome: 'still_unapplicable', reason: err.message }
      throw err
    }
    await tx.rows(queryBuilder.update(webhookDeadLetters).set({ replayedAt: sql`now()` }).where(eq(webhookDeadLetters.id, id)))
    return { id, jobId: letter.job_id, outcome: applied.outcome as ReplayResult['outcome'] }
  })
}

/** Dead letters not replayed yet (the metrics' gauge). */
export async function countPendingDeadLetters (db: Statements): Promise<number> {
  const [row] = await db.rows<{ n: number }>(sql`SELECT count(*)::int AS n FROM webhook_dead_letters WHERE replayed_at IS NULL`)
  return row?.n ?? 0
}
