import fc from 'fast-check'
import { completedDelivery } from '../../scripts/deliveries.ts'
import { anyText, FUZZ_USERS } from './valid-delivery.ts'

/**
 * Invalid bodies, each a mutation of a small valid delivery: every one must be a 4xx that changes
 * nothing. `body` is the exact bytes sent (and signed); `kind` names the mutation for the figures.
 */
export interface InvalidCase {
  kind: string
  body: string | Buffer
  /** Signature-level mutations: how to spoil the headers (the body itself is valid). */
  spoil?: 'flipped_body_byte' | 'stale_timestamp' | 'missing_signature' | 'wrong_secret'
}

type Json = Record<string, unknown>

/** A small valid delivery, the same bytes on every run (a seed replays exactly): every mutation starts from it. */
function baseDelivery (jobId: string, status: 'completed' | 'failed', chapters: number): Json {
  const delivery = completedDelivery({
    jobId,
    userId: FUZZ_USERS[0],
    book: {
      book_title: 'Titre',
      topic: 'Sujet',
      goal: 'But',
      outline: [{ title: 'Plan 1', description: 'desc' }],
      chapters: Array.from({ length: chapters }, (_, i) => ({ title: `Chapitre ${i + 1}`, content: `# ${i + 1}\n\nTexte é 😊`, description: 'd' })),
      generated_at: '2099-01-01T00:00:00.000Z',
      word_count: 10,
      chapter_count: chapters,
    },
  })
  // A failed delivery keeps the book: a sender may send one, and it must be ignored.
  return { ...delivery, status, timestamp: '2025-10-20T10:23:34.861Z', error: status === 'failed' ? 'generation failed' : null }
}

type FieldKind = 'id' | 'status' | 'date' | 'text' | 'title' | 'int' | 'array' | 'object' | 'user' | 'error'

/** Where a field lives, how to find it in a delivery, and what it must be. */
interface FieldSpec { path: Array<string | number>, kind: FieldKind, required: boolean }

function fieldsOf (delivery: Json): FieldSpec[] {
  const book = delivery.book_data as Json | undefined
  const specs: FieldSpec[] = [
    { path: ['job_id'], kind: 'id', required: true },
    { path: ['status'], kind: 'status', required: true },
    { path: ['timestamp'], kind: 'date', required: true },
    { path: ['environment'], kind: 'text', required: true },
    { path: ['user_id'], kind: 'user', required: false },
    { path: ['error'], kind: 'error', required: delivery.status === 'failed' },
  ]
  if (!book) return specs
  const required = delivery.status === 'completed'
  specs.push(
    { path: ['book_data'], kind: 'object', required },
    { path: ['book_data', 'book_title'], kind: 'title', required },
    { path: ['book_data', 'topic'], kind: 'text', required },
    { path: ['book_data', 'goal'], kind: 'text', required },
    { path: ['book_data', 'outline'], kind: 'array', required },
    { path: ['book_data', 'chapters'], kind: 'array', required },
    { path: ['book_data', 'generated_at'], kind: 'date', required },
    { path: ['book_data', 'word_count'], kind: 'int', required },
    { path: ['book_data', 'chapter_count'], kind: 'int', required },
    { path: ['book_data', 'outline', 0], kind: 'object', required },
    { path: ['book_data', 'outline', 0, 'title'], kind: 'text', required }
  )
  ;(book.chapters as unknown[]).forEach((_, i) => specs.push(
    { path: ['book_data', 'chapters', i], kind: 'object', required },
    { path: ['book_data', 'chapters', i, 'title'], kind: 'text', required },
    { path: ['book_data', 'chapters', i, 'content'], kind: 'text', required },
    { path: ['book_data', 'chapters', i, 'description'], kind: 'text', required }
  ))
  return specs
}

/** Values of the wrong type (or out of range) for each kind of field. */
const WRONG_VALUES: Record<FieldKind, unknown[]> = {
  id: ['', 'x'.repeat(256), 1, null, true, [], {}],
  status: ['COMPLETED', 'done', '', 1, null, ['completed'], {}],
  date: ['yesterday', '2025-02-30T10:00:00Z', '2025-10-20', '', '2025-13-01T00:00:00Z', 1729419814, null, {}],
  text: [1, 1.5, true, null, [], {}],
  title: ['', 'é'.repeat(1_001), 1, null, [], {}],
  int: ['5', 1.5, -1, 2_147_483_648, 1e20, true, null, [], {}],
  array: ['x', 1, null, {}, true],
  object: ['x', 1, null, [], true],
  user: ['', 1, null, true, [], {}, 'u'.repeat(256)],
  error: [1, true, [], {}],
}

function setAt (target: Json, path: Array<string | number>, value: unknown, remove = false): void {
  let node = target as Record<string | number, unknown>
  for (const part of path.slice(0, -1)) node = node[part] as Record<string | number, unknown>
  const last = path.at(-1)!
  if (remove) delete node[last]
  else node[last] = value
}

function getAt (target: Json, path: Array<string | number>): unknown {
  return path.reduce<unknown>((node, part) => (node as Record<string | number, unknown>)[part], target)
}

/** Every string-valued path of a JSON value (known fields and extras). */
function stringPaths (value: unknown, path: Array<string | number> = []): Array<Array<string | number>> {
  if (typeof value === 'string') return [path]
  if (Array.isArray(value)) return value.flatMap((item, i) => stringPaths(item, [...path, i]))
  if (value && typeof value === 'object') return Object.entries(value).flatMap(([key, item]) => stringPaths(item, [...path, key]))
  return []
}

/** Every object path of a JSON value (to add a key to). */
function objectPaths (value: unknown, path: Array<string | number> = []): Array<Array<string | number>> {
  if (Array.isArray(value)) return value.flatMap((item, i) => objectPaths(item, [...path, i]))
  if (value && typeof value === 'object') return [path, ...Object.entries(value).flatMap(([key, item]) => objectPaths(item, [...path, key]))]
  return []
}

const pick = <T>(items: readonly T[], n: number): T => items[n % items.length]!

function insertAt (text: string, at: number, piece: string): string {
  const chars = Array.from(text)
  const index = chars.length === 0 ? 0 : at % (chars.length + 1)
  return chars.slice(0, index).join('') + piece + chars.slice(index).join('')
}

/** JSON.stringify that writes `key` a second time into the object at `path`. */
function stringifyWithDuplicate (value: unknown, path: Array<string | number>, second: unknown, spelling: string): string {
  const write = (node: unknown, at: Array<string | number>): string => {
    if (Array.isArray(node)) return `[${node.map((item, i) => write(item, [...at, i])).join(',')}]`
    if (node && typeof node === 'object') {
      const entries = Object.entries(node).map(([k, v]) => `${JSON.stringify(k)}:${write(v, [...at, k])}`)
      if (at.length === path.length && at.every((part, i) => part === path[i])) entries.push(`${spelling}:${JSON.stringify(second)}`)
      return `{${entries.join(',')}}`
    }
    return JSON.stringify(node)
  }
  return write(value, [])
}

/** `"job_id"` as written by a sender, sometimes with an escape that means the same key. */
function spellKey (key: string, escaped: boolean): string {
  if (!escaped || key.length === 0) return JSON.stringify(key)
  const code = key.codePointAt(0)!
  return code > 0xffff ? JSON.stringify(key) : `"\\u${code.toString(16).padStart(4, '0')}${JSON.stringify(key).slice(1 + String.fromCodePoint(code).length)}`
}

const INVALID_UTF8: number[][] = [
  [0xff], [0xfe], [0x80], [0xc0, 0x80], [0xc1, 0xbf], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82], [0xf0, 0x9f, 0x98],
]
const LONE_SURROGATES = ['\ud800', '\udbff', '\udc00', '\udfff']
const HUGE_NUMBERS = ['1e309', '-1e309', '2147483648', '1e10', '9007199254740993', '-0.5', '1.0000000001', '-1']
const PROTO_KEYS = ['"__proto__":{"polluted":true}', '"constructor":{"prototype":{"polluted":true}}']
const NOT_OBJECTS = ['[]', '"completed"', '1', 'null', 'true', '', ' ', '{', '{"job_id":}', 'NaN', '{"a":1,}', '\ufeff{}']

const MUTATIONS = [
  'wrong_type', 'missing_field', 'nul_in_value', 'nul_in_key', 'lone_surrogate', 'invalid_utf8', 'deep_nesting',
  'huge_number', 'duplicate_key', 'prototype_key', 'truncated_json', 'not_an_object', 'rule_violation', 'over_limit',
  'bad_signature',
] as const

/** A mutation of a valid delivery of `jobId` (an existing job half the time, so a partial write would show). */
export function invalidDelivery (jobIds: readonly string[]): fc.Arbitrary<InvalidCase> {
  return fc.record({
    mutation: fc.constantFrom(...MUTATIONS),
    jobId: fc.constantFrom(...jobIds),
    status: fc.constantFrom('completed' as const, 'failed' as const),
    chapters: fc.integer({ min: 1, max: 4 }),
    n: fc.nat(),
    m: fc.nat(),
    text: anyText(20),
    depth: fc.oneof(fc.integer({ min: 65, max: 200 }), fc.integer({ min: 201, max: 50_000 })),
    escaped: fc.boolean(),
  }).map(({ mutation, jobId, status, chapters, n, m, text, depth, escaped }) => {
    const delivery = baseDelivery(jobId, status, chapters)
    const fields = fieldsOf(delivery)
    switch (mutation) {
      case 'wrong_type': {
        const field = pick(fields, n)
        setAt(delivery, field.path, pick(WRONG_VALUES[field.kind], m))
        // A failed delivery's book_data is ignored: only its types are checked, not its calendar.
        if (field.kind === 'date' && field.path[0] === 'book_data') delivery.status = 'completed'
        return { kind: mutation, body: JSON.stringify(delivery) }
      }
      case 'missing_field': {
        const field = pick(fields.filter((f) => f.required), n)
        setAt(delivery, field.path, undefined, true)
        return { kind: mutation, body: JSON.stringify(delivery) }
      }
      case 'nul_in_value':
      case 'lone_surrogate': {
        const piece = mutation === 'nul_in_value' ? '\u0000' : `${pick(LONE_SURROGATES, m)}x`
        // Anywhere: a known string, or an unknown field (a dead letter would store it).
        if (m % 3 === 0) {
          setAt(delivery, pick(objectPaths(delivery), n).concat(`extra${text}`), { nested: [insertAt(text, n, piece)] })
        } else {
          const path = pick(stringPaths(delivery), n)
          setAt(delivery, path, insertAt(getAt(delivery, path) as string, m, piece))
        }
        return { kind: mutation, body: JSON.stringify(delivery) }
      }
      case 'nul_in_key': {
        const key = m % 2 === 0 ? insertAt(text, n, '\u0000') : insertAt(text, n, `${pick(LONE_SURROGATES, m)}x`)
        setAt(delivery, pick(objectPaths(delivery), n).concat(key), text)
        return { kind: mutation, body: JSON.stringify(delivery) }
      }
      case 'invalid_utf8': {
        const path = pick(stringPaths(delivery), n)
        setAt(delivery, path, insertAt(getAt(delivery, path) as string, m, '\u0001MARK\u0001'))
        const [before, after] = JSON.stringify(delivery).split('\\u0001MARK\\u0001')
        return { kind: mutation, body: Buffer.concat([Buffer.from(before!), Buffer.from(pick(INVALID_UTF8, m)), Buffer.from(after!)]) }
      }
      case 'deep_nesting': {
        const open = m % 2 === 0 ? '['.repeat(depth) : '{"a":'.repeat(depth)
        const close = m % 2 === 0 ? ']'.repeat(depth) : '}'.repeat(depth)
        const nested = `${open}${m % 2 === 0 ? '' : '1'}${close}`
        return { kind: mutation, body: JSON.stringify(delivery).replace(/}$/, `,"deep":${nested}}`) }
      }
      case 'huge_number': {
        const digits = '9'.repeat(11 + (n % 5_000))
        const literal = pick([...HUGE_NUMBERS, digits], m)
        const field = n % 2 === 0 ? 'word_count' : 'chapter_count'
        const body = JSON.stringify({ ...delivery, status: 'completed' }).replace(`"${field}":`, `"${field}":${literal},"${field}_was":`)
        return { kind: mutation, body }
      }
      case 'duplicate_key': {
        const objects = objectPaths(delivery)
        const path = pick(objects, n)
        const target = getAt(delivery, path) as Json
        const keys = Object.keys(target)
        const key = pick(keys, m)
        const second = m % 3 === 0 ? target[key] : text
        return { kind: mutation, body: stringifyWithDuplicate(delivery, path, second, spellKey(key, escaped)) }
      }
      case 'prototype_key': {
        const body = JSON.stringify(delivery)
        return { kind: mutation, body: m % 2 === 0 ? body.replace(/^{/, `{${pick(PROTO_KEYS, n)},`) : body.replace('"book_data":{', `"book_data":{${pick(PROTO_KEYS, n)},`) }
      }
      case 'truncated_json': {
        // A strict prefix (in code points) of a JSON object is never valid JSON.
        const chars = Array.from(JSON.stringify(delivery))
        return { kind: mutation, body: chars.slice(0, n % chars.length).join('') }
      }
      case 'not_an_object':
        return { kind: mutation, body: pick(NOT_OBJECTS, n) }
      case 'rule_violation': {
        const book = delivery.book_data as Json
        const rules: Array<() => void> = [
          () => { delivery.status = 'completed'; book.chapters = [] },
          () => { delivery.status = 'completed'; delete delivery.book_data },
          () => { delivery.status = 'failed'; delivery.error = m % 2 === 0 ? null : '' },
          () => { delivery.status = 'failed'; delete delivery.error },
          () => { delivery.status = 'completed'; book.generated_at = '2025-02-29T12:00:00Z' },
          () => { delivery.timestamp = '2024-04-31T00:00:00.000+02:00' },
        ]
        pick(rules, n)()
        return { kind: mutation, body: JSON.stringify(delivery) }
      }
      case 'over_limit': {
        const book = delivery.book_data as Json
        const limits: Array<() => void> = [
          () => { delivery.status = 'completed'; book.chapters = Array.from({ length: 2_001 }, () => ({ title: '', content: '', description: '' })) },
          () => { book.outline = Array.from({ length: 2_001 }, () => ({ title: '' })) },
          () => { delivery.job_id = '😊'.repeat(256) },
          () => { book.book_title = 'a'.repeat(1_001) },
          () => { book.topic = 'a'.repeat(100_001) },
          () => { delivery.environment = 'e'.repeat(256) },
        ]
        pick(limits, n)()
        return { kind: mutation, body: JSON.stringify(delivery) }
      }
      case 'bad_signature': {
        const spoils = ['flipped_body_byte', 'stale_timestamp', 'missing_signature', 'wrong_secret'] as const
        return { kind: mutation, body: JSON.stringify(delivery), spoil: pick(spoils, n) }
      }
    }
    throw new Error(`unknown mutation ${mutation as string}`)
  })
}
