import type { DatabaseHandle, Statements } from '../db/client.ts'
import { listDeadLetters, replayDeadLetter, type ReplayContext, type ReplayResult } from '../webhooks/dead-letters.ts'
import { commandLogger, openCommandDatabase, parseCommandLine, positiveInteger, runCommand, say, UsageError } from './common.ts'

const USAGE = `usage: npm run dead-letters -- <command> [options]

  list [--pending] [--json] [--limit N]   dead letters, oldest first, without their payloads;
                                          --limit: only the latest N
  replay <id> [--dry-run] [--json]        re-apply one dead letter through the service's own code
  replay --all [--dry-run] [--json]       every pending one, oldest first, each said as it is done
                                          --dry-run: run each replay and roll it back: says what
                                          would happen, writes nothing

Environment: DATABASE_URL (required); DEFAULT_USER_ID owns replayed deliveries that carry no
user_id, as it does for the service.
Exit code: 0 when every letter asked for is replayed (now or before), 1 when one is not or the
database fails, 2 for a bad command line.`

/** Outcomes that leave the letter pending (or that name no letter). */
const NOT_REPLAYED = new Set<ReplayResult['outcome']>(['not_found', 'still_unapplicable', 'invalid_payload'])

async function main (): Promise<number> {
  const { values, positionals } = parseCommandLine({
    args: process.argv.slice(2),
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      pending: { type: 'boolean' },
      json: { type: 'boolean' },
      limit: { type: 'string' },
      all: { type: 'boolean' },
      'dry-run': { type: 'boolean' },
    },
  })
  if (values.help) {
    say(USAGE)
    return 0
  }
  const [command, target, ...extra] = positionals
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`)

  if (command === 'list') {
    if (target !== undefined || values.all || values['dry-run']) throw new UsageError('list takes only --pending, --json and --limit')
    const limit = positiveInteger('limit', values.limit)
    return withDatabase((db) => list(db, { pendingOnly: values.pending ?? false, json: values.json ?? false, limit }))
  }
  if (command === 'replay') {
    if (values.pending || values.limit !== undefined) throw new UsageError('replay takes <id> or --all, and --dry-run, --json')
    if ((values.all ?? false) === (target !== undefined)) throw new UsageError('replay needs one dead letter id or --all')
    if (target !== undefined && !/^[1-9]\d{0,15}$/.test(target)) throw new UsageError(`a dead letter id is a positive integer (got ${JSON.stringify(target)})`)
    return withDatabase((db) => replay(db, target === undefined ? 'all' : Number(target), { dryRun: values['dry-run'] ?? false, json: values.json ?? false }))
  }
  throw new UsageError(command === undefined ? 'a command is required: list or replay' : `unknown command ${JSON.stringify(command)}: list or replay`)
}

async function withDatabase (work: (db: DatabaseHandle) => Promise<number>): Promise<number> {
  const handle = await openCommandDatabase()
  try {
    return await work(handle)
  } finally {
    await handle.close()
  }
}

async function list (db: Statements, options: { pendingOnly: boolean, json: boolean, limit: number | undefined }): Promise<number> {
  const letters = await listDeadLetters(db, { pendingOnly: options.pendingOnly })
  const shown = options.limit === undefined ? letters : letters.slice(-options.limit)
  if (options.json) {
    say(JSON.stringify(shown))
    return 0
  }
  say('id\treceived_at\treplayed_at\tjob_id\twebhook_id\treason')
  for (const letter of shown) {
    say(`${letter.id}\t${letter.receivedAt}\t${letter.replayedAt ?? 'pending'}\t${letter.jobId ?? ''}\t${letter.webhookId ?? ''}\t${letter.reason}`)
  }
  const pending = letters.filter((letter) => letter.replayedAt === null).length
  const showing = shown.length < letters.length ? ` (showing the latest ${shown.length})` : ''
  say(`${letters.length} dead letter(s), ${pending} pending${showing}`)
  return 0
}

async function replay (db: DatabaseHandle, target: number | 'all', options: { dryRun: boolean, json: boolean }): Promise<number> {
  const context: ReplayContext = {
    defaultUserId: process.env.DEFAULT_USER_ID?.trim() || undefined,
    fallbackToOldestUser: false,
    log: commandLogger(),
  }
  const ids = target === 'all'
    ? (await listDeadLetters(db, { pendingOnly: true })).map((letter) => letter.id)
    : [target]
  let replayed = 0
  for (const id of ids) {
    const result = options.dryRun ? await replayRolledBack(db, id, context) : await replayDeadLetter(db, id, context)
    if (!NOT_REPLAYED.has(result.outcome)) replayed++
    if (options.json) say(JSON.stringify({ ...result, dryRun: options.dryRun }))
    else say(`${result.id}\t${result.jobId ?? ''}\t${result.outcome}${result.reason ? `\t${result.reason}` : ''}`)
  }
  const failed = ids.length - replayed
  if (!options.json) {
    say(options.dryRun
      ? `dry run, nothing written: ${replayed} would be replayed, ${failed} would not`
      : `${replayed} replayed, ${failed} not`)
  }
  return failed === 0 ? 0 : 1
}

class DryRunRollback extends Error {}

/** The replay exactly as it would run, inside a transaction that is then rolled back. */
async function replayRolledBack (db: Statements, id: number, context: ReplayContext): Promise<ReplayResult> {
  let result: ReplayResult | undefined
  try {
    await db.transaction(async (tx) => {
      result = await replayDeadLetter(tx, id, context)
      throw new DryRunRollback()
    })
  } catch (err) {
    if (!(err instanceof DryRunRollback)) throw err
  }
  return result!
}

await runCommand('dead-letters', main)
