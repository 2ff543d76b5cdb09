import type { LoggerOptions } from 'pino'
import type { Config } from './config.ts'

/** Header values that authenticate a delivery; never written to a log. */
export const REDACTED_PATHS = [
  'req.headers["webhook-signature"]',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers["webhook-signature"]',
  'config.webhookKeys',
  'WEBHOOK_SECRET',
]

export function loggerOptions (config: Pick<Config, 'logLevel'>): LoggerOptions {
  return {
    level: config.logLevel,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  }
}
