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
