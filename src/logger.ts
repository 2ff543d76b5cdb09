import { createRequire } from 'node:module'
import type { LoggerOptions } from 'pino'
import type { Config } from './config.ts'

/** Header values that authenticate a delivery; never written to a log. */
const REDACTED_PATHS = [
  'req.headers["webhook-signature"]',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers["webhook-signature"]',
  'config.webhookKeys',
  'WEBHOOK_SECRET',
]

/** pino-pretty is a dev dependency: the image (production dependencies only) has none. */
function prettyPrinterInstalled (): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty')
    return true
  } catch {
    return false
  }
}

/**
 * JSON lines, one per event, for log collectors; readable lines when a person watches a terminal
 * (stdout is a TTY and pino-pretty is installed). Chosen by the output, never by the environment.
 */
export function loggerOptions (config: Pick<Config, 'logLevel'>, stdout: { isTTY?: boolean } = process.stdout): LoggerOptions {
  const options: LoggerOptions = {
    level: config.logLevel,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  }
  if (!stdout.isTTY || !prettyPrinterInstalled()) return options
  return {
    ...options,
    transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
  }
}

const FRAME = /^\s+at \S/
const MAX_FRAMES = 20

/**
 * An error's stack frames (`at fn (file:line:col)`), without its message, for the log line of a
 * 500: the bug can be found from the log, while a failed query's message (its SQL and every bound
 * parameter, i.e. book text) stays out. The message may span lines, so it is cut off whole.
 */
export function stackFrames (err: unknown): string[] {
  const { stack, message } = (err ?? {}) as { stack?: unknown, message?: unknown }
  if (typeof stack !== 'string') return []
  const at = typeof message === 'string' && message ? stack.indexOf(message) : -1
  let lines: string[]
  if (at >= 0 && at < 200) {
    lines = stack.slice(at + (message as string).length).split('\n').filter((line) => FRAME.test(line))
  } else {
    // The message was changed after the stack was taken: keep only the frames that end the stack.
    lines = stack.split('\n')
    let first = lines.length
    while (first > 0 && FRAME.test(lines[first - 1]!)) first--
    lines = lines.slice(first)
  }
  return lines.slice(0, MAX_FRAMES).map((line) => line.trim().slice(0, 300))
}
