import pino from 'pino'
import { openDatabase } from '../src/db/client.ts'
import { listDeadLetters, replayAllDeadLetters, replayDeadLetter, type ReplayResult } from '../src/webhooks/dead-letters.ts'

/**
 * npm run dead-letters -- list [--pending]
 * npm run dead-letters -- replay <id|--all>
 *
 * Reads DATABASE_URL; DEFAULT_USER_ID, when set, owns replayed deliveries that carry no user_id
 * (as it does for the route). Exit code 0 when every letter asked for is replayed (now or before).
 */
const USAGE = 'usage: npm run dead-letters -- list [--pending] | replay <id|--all>'

async function main (args: string[]): Promise<number> {
  const [command, target] = args
  const databaseUrl = process.env.DATABASE_URL?.trim()
  if (!databaseUrl) {
    process.stderr.write('configuration error: DATABASE_URL: is required\n')
    return 2
  }
  if (command !== 'list' && !(command === 'replay' && target && (target === '--all' || /^\d+$/.test(target)))) {
    process.stderr.write(`${USAGE}\n`)
    return 2
  }

  // Warnings only (e.g. a payload user_id that differs from the job owner), on stderr; never payloads.
  const log = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2))
  const handle = await openDatabase({ databaseUrl, dataDir: '' }, log)
  try {
    if (command === 'list') {
      const letters = await listDeadLetters(handle, { pendingOnly: target === '--pending' })
      process.stdout.write('id\treceived_at\treplayed_at\tjob_id\twebhook_id\treason\n')
      for (const letter of letters) {
        process.stdout.write(`${letter.id}\t${letter.receivedAt}\t${letter.replayedAt ?? 'pending'}\t${letter.jobId ?? ''}\t${letter.webhookId ?? ''}\t${letter.reason}\n`)
      }
      process.stdout.write(`${letters.length} dead letter(s), ${letters.filter((l) => l.replayedAt === null).length} pending\n`)
      return 0
    }

    const context = { defaultUserId: process.env.DEFAULT_USER_ID?.trim() || undefined, fallbackToOldestUser: false, log }
    const results: ReplayResult[] = target === '--all'
      ? await replayAllDeadLetters(handle, context)
      : [await replayDeadLetter(handle, Number(target), context)]
    for (const result of results) {
      process.stdout.write(`${result.id}\t${result.jobId ?? ''}\t${result.outcome}${result.reason ? `\t${result.reason}` : ''}\n`)
    }
    const failed = results.filter((result) => ['not_found', 'still_unapplicable', 'invalid_payload'].includes(result.outcome))
    process.stdout.write(`${results.length - failed.length} replayed, ${failed.length} not\n`)
    return failed.length === 0 ? 0 : 1
  } finally {
    await handle.close()
  }
}

/** A failed query's message holds its SQL and parameters (book text): print only the driver's code and message. */
function describe (err: unknown): string {
  const cause = (err as { cause?: unknown }).cause ?? err
  const { code, message } = cause as { code?: unknown, message?: unknown }
  return typeof code === 'string' ? `${code} ${String(message)}` : (err as Error).name
}

try {
  process.exitCode = await main(process.argv.slice(2))
} catch (err) {
  process.stderr.write(`dead-letters failed: ${describe(err)}\n`)
  process.exitCode = 1
}
