import { secretToKey } from '../../src/config.ts'
import { TEST_SECRET } from '../helper.ts'

/** What must never appear in a response body (or a log line): each names why. */
const LEAK_PATTERNS: Array<[string, RegExp]> = [
  ['stack frame', /\bat [^\n]*:\d+:\d+\)?/],
  ['internal path', /node_modules|\/work\/|\bsrc\/|\.ts\b|file:\/\//],
  ['SQL', /\b(select\s.+\sfrom|insert\s+into|update\s+\w+\s+set|delete\s+from|on\s+conflict)\b/i],
  ['query error', /Failed query|DrizzleQueryError|violates|relation "/i],
]

/** The secret in every form it exists in the process. */
export const SECRET_FORMS = [TEST_SECRET, TEST_SECRET.slice('whsec_'.length), secretToKey(TEST_SECRET).toString('hex')]

/** Why `text` leaks something, or undefined. `extra` are literal values that must not appear. */
export function findLeak (text: string, extra: readonly string[] = []): string | undefined {
  for (const [name, pattern] of LEAK_PATTERNS) if (pattern.test(text)) return name
  for (const secret of SECRET_FORMS) if (text.includes(secret)) return 'secret'
  for (const value of extra) if (value.length > 0 && text.includes(value)) return `literal ${JSON.stringify(value.slice(0, 40))}`
  return undefined
}
