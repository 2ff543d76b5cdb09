import type { BookEvent } from '../events/book-events.ts'
import { databaseUrlFromEnv, openCommandDatabase, parseCommandLine, runCommand, say, UsageError } from './common.ts'
import { knowsJob, readJobReport, type JobReport } from './job-report.ts'
import { watchBookEvents } from './watch-events.ts'

const USAGE = `usage: npm run deliveries -- <command> [options]

  show <job_id> [--json]   what the database holds for a job: status, owner and times, the applied
                           webhook-ids, the book with its chapter and word counts, its dead letters;
                           exit 1 when it knows nothing of that job
  watch [--json]           one line per book_events notification, as each delivery commits
                           (time, event, job, book, user, chapters; --json: the payload as one JSON
                           line); reconnects by itself when the connection drops (said on stderr);
                           Ctrl-C or SIGTERM ends it (exit 0)

Environment: DATABASE_URL (required).
Exit code: 0, 1 when nothing is known of the job or the database fails, 2 for a bad command line.`

async function main (): Promise<number> {
  const { values, positionals } = parseCommandLine({
    args: process.argv.slice(2),
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      json: { type: 'boolean' },
    },
  })
  if (values.help) {
    say(USAGE)
    return 0
  }
  const [command, jobId, ...extra] = positionals
  const json = values.json ?? false
  if (command === 'show') {
    if (jobId === undefined || jobId === '') throw new UsageError('show needs a job_id')
    if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`)
    return show(jobId, json)
  }
  if (command === 'watch') {
    if (jobId !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(jobId)}`)
    return watch(json)
  }
  throw new UsageError(command === undefined ? 'a command is required: show or watch' : `unknown command ${JSON.stringify(command)}: show or watch`)
}

async function show (jobId: string, json: boolean): Promise<number> {
  const handle = await openCommandDatabase()
  let report: JobReport
  try {
    report = await readJobReport(handle, jobId)
  } finally {
    await handle.close()
  }
  if (!knowsJob(report)) {
    process.stderr.write(`deliveries: nothing is known of job ${JSON.stringify(jobId)} (no job, no dead letter)\n`)
    return 1
  }
  if (json) say(JSON.stringify(report))
  else for (const line of describeReport(report)) say(line)
  return 0
}

const time = (value: Date | null) => value?.toISOString() ?? '-'

function describeReport ({ jobId, job, book, deadLetters }: JobReport): string[] {
  const lines = [`job          ${jobId}`]
  if (job) {
    lines.push(
      `status       ${job.status}${job.error !== null ? ` (error: ${job.error})` : ''}`,
      `owner        ${job.owner}`,
      `created      ${time(job.createdAt)}`,
      `updated      ${time(job.updatedAt)}`,
      `completed    ${time(job.completedAt)}`,
      `webhook-ids  ${job.appliedWebhookIds.length} applied${job.appliedWebhookIds.length ? ` (oldest first): ${job.appliedWebhookIds.join(' ')}` : ''}`)
  } else {
    lines.push('status       no job row (only dead letters)')
  }
  if (book) {
    lines.push(
      `book         ${book.id} ${JSON.stringify(book.title)}`,
      `  chapters   ${book.storedChapters} stored (sender said ${book.senderChapterCount ?? '-'})`,
      `  words      ${book.countedWords} counted in the chapters (sender said ${book.senderWordCount ?? '-'})`,
      `  generated  ${time(book.generatedAt)}`,
      `  created    ${time(book.createdAt)}`,
      `  updated    ${time(book.updatedAt)}`)
  } else {
    lines.push('book         none')
  }
  lines.push(`dead letters ${deadLetters.length}`)
  for (const letter of deadLetters) {
    lines.push(`  ${letter.id}\t${time(letter.receivedAt)}\t${letter.replayedAt ? `replayed ${time(letter.replayedAt)}` : 'pending'}\t${letter.webhookId ?? ''}\t${letter.reason}`)
  }
  return lines
}

async function watch (json: boolean): Promise<number> {
  const controller = new AbortController()
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => controller.abort())
  await watchBookEvents({
    connectionString: databaseUrlFromEnv(),
    signal: controller.signal,
    onEvent: (event) => say(json ? JSON.stringify(event) : describeEvent(event)),
    onIgnored: (payload) => process.stderr.write(`deliveries: ignored a notification that is not a book event: ${JSON.stringify(payload.slice(0, 200))}\n`),
    onStatus: (line) => process.stderr.write(`deliveries: ${line}\n`),
  })
  return 0
}

function describeEvent (event: BookEvent): string {
  return `${new Date().toISOString()} ${event.event} job=${event.job_id} book=${event.book_id ?? '-'} user=${event.user_id} chapters=${event.chapter_count}`
}

await runCommand('deliveries', main)
