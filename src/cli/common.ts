import { parseArgs, type ParseArgsConfig } from 'node:util'
import pino from 'pino'
import { openDatabase, type DatabaseHandle } from '../db/client.ts'

/**
 * What every operator command shares: options through node:util parseArgs, one line on stderr
 * and a non-zero exit for a bad option (2) or a failure (1), never a stack trace.
 */

/** A mistake in the command line: said in one line, exit code 2. */
export class UsageError extends Error {}

/** parseArgs, strict; its own errors (unknown option, missing value) become a UsageError. */
export function parseCommandLine<T extends ParseArgsConfig> (config: T) {
  try {
    return parseArgs({ strict: true, ...config })
  } catch (err) {
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS_')) throw new UsageError((err as Error).message.split('\n', 1)[0]!.split('. To specify', 1)[0])
    throw err
  }
}

/** A positive integer option (`--limit 20`), or a UsageError naming it. */
export function positiveInteger (option: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  if (!/^[1-9]\d{0,8}$/.test(value)) throw new UsageError(`--${option} must be a positive integer (got ${JSON.stringify(value)})`)
  return Number(value)
}

/**
 * One line about a failure. A failed query's own message holds its SQL and parameters (book
 * text): only the driver's code and message are said, from the innermost error that has them.
 */
export function describeFailure (err: unknown): string {
  let said: string | undefined
  for (let current: unknown = err, depth = 0; current && depth < 5; current = (current as { cause?: unknown }).cause, depth++) {
    const { code, message, name, errors } = current as { code?: unknown, message?: unknown, name?: unknown, errors?: unknown }
    if (name === 'DrizzleQueryError') continue
    // Node reports a refused connection to a host with several addresses as an AggregateError.
    let text = typeof message === 'string' ? message : ''
    if (!text && Array.isArray(errors) && typeof errors[0]?.message === 'string') text = errors[0].message
    if (typeof code === 'string') said = text.includes(code) ? text : `${code} ${text}`.trim()
    else if (text) said ??= text
  }
  return (said ?? (err as { name?: string })?.name ?? 'unknown error').split('\n', 1)[0]!
}

/** DATABASE_URL, which every command needs. */
export function databaseUrlFromEnv (): string {
  const url = process.env.DATABASE_URL?.trim()
  if (!url) throw new UsageError('DATABASE_URL is required (postgres://user:password@host:5432/database)')
  return url
}

/** Warnings only (a lost connection, a payload user_id that differs from the job owner), on stderr. */
export function commandLogger () {
  return pino({ level: 'warn' }, pino.destination(2))
}

/** The service's own pool, small: a command runs one statement at a time. */
export async function openCommandDatabase (): Promise<DatabaseHandle> {
  return openDatabase({ databaseUrl: databaseUrlFromEnv(), dataDir: '', poolMax: 2 }, commandLogger())
}

/** Writes one line to stdout. */
export function say (line: string): void {
  process.stdout.write(`${line}\n`)
}

/**
 * Runs a command's main and sets the exit code: its own result, 2 for a usage error, 1 for a
 * failure. `watch | head` closing stdout early is an ordinary end.
 */
export async function runCommand (name: string, main: () => Promise<number>): Promise<void> {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') process.stderr.write(`${name} failed: stdout: ${err.code ?? err.message}\n`)
    process.exit(err.code === 'EPIPE' ? 0 : 1)
  })
  try {
    process.exitCode = await main()
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${name}: ${err.message} (see npm run ${name} -- --help)\n`)
      process.exitCode = 2
    } else {
      process.stderr.write(`${name} failed: ${describeFailure(err)}\n`)
      process.exitCode = 1
    }
  }
}
