import { PayloadError } from '../errors.ts'
import { LIMITS } from './payload.ts'

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
const COMMA = 0x2c
const COLON = 0x3a

interface Container {
  /** Keys seen so far; undefined for an array. */
  keys: Set<string> | undefined
  path: string
  /** Current element index (arrays) and current key (objects), to name a nested field. */
  index: number
  key: string
  /** The value of a `constructor` key: a `prototype` key in it is refused. */
  inConstructor: boolean
}

/**
 * Checks what `JSON.parse` silently accepts and this service refuses, on the raw bytes before
 * parsing: a key given twice in one object (parsers disagree on which value wins, so the signed
 * bytes would not say one thing), nesting deeper than `LIMITS.nestingDepth` (refused before
 * a hostile document costs a parse), and the prototype-poisoning keys `__proto__` and
 * `constructor.prototype` (what secure-json-parse refuses, checked here on the keys this scan
 * visits anyway, so the parse can be a plain `JSON.parse`). Strings are skipped with `indexOf`,
 * so the cost follows the number of tokens, not the size of the book. Malformed JSON is left to
 * the parser to report.
 */
export function checkJsonStructure (body: Buffer): PayloadError | undefined {
  const stack: Container[] = []
  let stringStart = -1
  let stringEnd = -1
  for (let i = 0; i < body.length; i++) {
    const byte = body[i]
    if (byte === QUOTE) {
      const end = closingQuote(body, i)
      if (end === -1) return undefined
      stringStart = i
      stringEnd = end
      i = end
    } else if (byte === OPEN_OBJECT || byte === OPEN_ARRAY) {
      const path = childPath(stack.at(-1))
      if (stack.length >= LIMITS.nestingDepth) {
        return new PayloadError(path || 'body', `is nested deeper than ${LIMITS.nestingDepth} levels`)
      }
      const parent = stack.at(-1)
      const inConstructor = byte === OPEN_OBJECT && parent?.keys !== undefined && parent.key === 'constructor'
      stack.push({ keys: byte === OPEN_OBJECT ? new Set() : undefined, path, index: 0, key: '', inConstructor })
    } else if (byte === CLOSE_OBJECT || byte === CLOSE_ARRAY) {
      stack.pop()
    } else if (byte === COMMA) {
      const top = stack.at(-1)
      if (top && !top.keys) top.index++
    } else if (byte === COLON) {
      const top = stack.at(-1)
      if (!top?.keys || stringStart === -1) return undefined
      const key = decodeKey(body, stringStart, stringEnd)
      if (key === undefined) return undefined
      const field = top.path ? `${top.path}.${key}` : key
      if (top.keys.has(key)) return new PayloadError(field, 'is given twice in one object (duplicate key)')
      if (key === '__proto__' || (key === 'prototype' && top.inConstructor)) {
        return new PayloadError(field, 'is a prototype-poisoning key, refused')
      }
      top.keys.add(key)
      top.key = key
      stringStart = -1
    }
  }
  return undefined
}

/** Index of the quote closing the string opened at `open`, or -1. */
function closingQuote (body: Buffer, open: number): number {
  let at = open + 1
  for (;;) {
    const quote = body.indexOf(QUOTE, at)
    if (quote === -1) return -1
    let backslashes = 0
    for (let k = quote - 1; k > open && body[k] === BACKSLASH; k--) backslashes++
    if (backslashes % 2 === 0) return quote
    at = quote + 1
  }
}

function decodeKey (body: Buffer, open: number, close: number): string | undefined {
  if (!body.subarray(open + 1, close).includes(BACKSLASH)) return body.toString('utf8', open + 1, close)
  try {
    return JSON.parse(body.toString('utf8', open, close + 1)) as string
  } catch {
    return undefined
  }
}

function childPath (parent: Container | undefined): string {
  if (!parent) return ''
  if (!parent.keys) return `${parent.path}[${parent.index}]`
  return parent.path ? `${parent.path}.${parent.key}` : parent.key
}
