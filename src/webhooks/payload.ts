import { Type, type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { PayloadError } from '../errors.ts'

/** Documented limits: beyond them a delivery is a 400 naming the field. */
export const LIMITS = {
  idLength: 255,
  titleLength: 1_000,
  textLength: 100_000,
  chapters: 2_000,
  outlineItems: 2_000,
  nestingDepth: 64,
  int32: 2_147_483_647,
} as const

/** ISO 8601 date-time; a missing zone (Python's naive `isoformat()`) is read as UTC. */
const ISO_DATE_TIME = '^\\d{4}-\\d{2}-\\d{2}[Tt ]\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,9})?)?([Zz]|[+-]\\d{2}(:?\\d{2})?)?$'

const DateTimeString = Type.String({ pattern: ISO_DATE_TIME, description: 'ISO 8601 date-time' })
const Count = Type.Integer({ minimum: 0, maximum: LIMITS.int32 })

const ChapterSchema = Type.Object({
  title: Type.String({ maxLength: LIMITS.titleLength }),
  content: Type.String(),
  description: Type.String({ maxLength: LIMITS.textLength }),
})

const OutlineItemSchema = Type.Object({
  title: Type.String({ maxLength: LIMITS.titleLength }),
  description: Type.Optional(Type.String({ maxLength: LIMITS.textLength })),
})

const BookDataSchema = Type.Object({
  book_title: Type.String({ minLength: 1, maxLength: LIMITS.titleLength }),
  topic: Type.String({ maxLength: LIMITS.textLength }),
  goal: Type.String({ maxLength: LIMITS.textLength }),
  outline: Type.Array(OutlineItemSchema, { maxItems: LIMITS.outlineItems }),
  chapters: Type.Array(ChapterSchema, { maxItems: LIMITS.chapters }),
  generated_at: DateTimeString,
  word_count: Count,
  chapter_count: Count,
})

/**
 * The delivery of contract section 3. `book_data` is required for `completed` (with at least one
 * chapter) and `error` for `failed`: those rules are checked by `checkDeliveryRules`, which names
 * the field, rather than by an `anyOf` whose errors would not.
 */
export const DeliverySchema = Type.Object({
  job_id: Type.String({ minLength: 1, maxLength: LIMITS.idLength }),
  status: Type.Union([Type.Literal('completed'), Type.Literal('failed')]),
  timestamp: DateTimeString,
  environment: Type.String({ maxLength: LIMITS.idLength }),
  user_id: Type.Optional(Type.String({ minLength: 1, maxLength: LIMITS.idLength })),
  error: Type.Optional(Type.Union([Type.String({ maxLength: LIMITS.textLength }), Type.Null()])),
  book_data: Type.Optional(BookDataSchema),
}, { description: 'Book-completion delivery; unknown fields are ignored' })

export type Delivery = Static<typeof DeliverySchema>
export type BookData = Static<typeof BookDataSchema>

export interface CompletedDelivery extends Delivery {
  status: 'completed'
  book_data: BookData
}

const deliveryValidator = Compile(DeliverySchema)

/**
 * The one validation of a delivery, for the route and for a dead letter's replay: the schema, the
 * rules it cannot name a field for, then text Postgres cannot store. `raw`, the body the value was
 * parsed from, lets a clean body skip the walk over every string. Throws PayloadError.
 */
export function validateDelivery (value: unknown, raw?: Buffer): Delivery {
  if (!deliveryValidator.Check(value)) throw schemaError(value)
  checkDeliveryRules(value)
  const unstorable = raw && !mayHoldUnstorableText(raw) ? undefined : findUnstorableText(value)
  if (unstorable) throw unstorable
  return value
}

/** `book_data.chapters[0].content: is required`, from the first schema error. */
function schemaError (value: unknown): PayloadError {
  const errors = deliveryValidator.Errors(value)
  const [first] = errors
  if (!first) return new PayloadError('body', 'does not match the delivery schema')
  const field = first.instancePath.split('/').filter(Boolean)
    .map((part) => /^\d+$/.test(part) ? `[${part}]` : `.${part}`).join('').replace(/^\./, '')
  const { requiredProperties, allowedValue } = first.params as { requiredProperties?: string[], allowedValue?: unknown }
  if (requiredProperties?.[0]) return new PayloadError(field ? `${field}.${requiredProperties[0]}` : requiredProperties[0], 'is required')
  if (allowedValue !== undefined) {
    const allowed = errors.filter((error) => error.instancePath === first.instancePath && error.keyword === 'const')
      .map((error) => JSON.stringify((error.params as { allowedValue: unknown }).allowedValue))
    return new PayloadError(field, `must be one of ${allowed.join(', ')}`)
  }
  if (first.keyword === 'pattern') return new PayloadError(field, 'must be an ISO 8601 date-time')
  return new PayloadError(field || 'body', first.message)
}

/** The rules a JSON schema cannot name a field for. Throws PayloadError. */
function checkDeliveryRules (delivery: Delivery): void {
  if (delivery.status === 'completed') {
    if (!delivery.book_data) throw new PayloadError('book_data', 'is required when status is "completed"')
    if (delivery.book_data.chapters.length === 0) {
      throw new PayloadError('book_data.chapters', 'must hold at least one chapter when status is "completed"')
    }
    checkDateTime('book_data.generated_at', delivery.book_data.generated_at)
  } else if (!delivery.error) {
    throw new PayloadError('error', 'is required (a non-empty string) when status is "failed"')
  }
  checkDateTime('timestamp', delivery.timestamp)
}

/** The pattern admits 2025-02-30; a real calendar check turns it into a 400, not a database error. */
function checkDateTime (field: string, value: string): void {
  const [year, month, day, hour, minute, second = 0] = (value.match(/\d+/g) ?? []).map(Number)
  const date = new Date(Date.UTC(year!, month! - 1, day, hour, minute, second))
  const valid = date.getUTCFullYear() === year && date.getUTCMonth() === month! - 1 && date.getUTCDate() === day &&
    date.getUTCHours() === hour && date.getUTCMinutes() === minute && date.getUTCSeconds() === second
  if (!valid) throw new PayloadError(field, 'is not a valid date-time')
}

/** A timestamp Postgres reads the same way everywhere: a zone-less value is UTC. */
export function toTimestamptz (value: string): string {
  return /([Zz]|[+-]\d{2}(:?\d{2})?)$/.test(value) ? value : `${value}Z`
}

/**
 * A cheap look at the raw body that proves `findUnstorableText` would find nothing, so a 94 KB
 * book is not walked string by string. From valid UTF-8 JSON, U+0000 and lone surrogates can only
 * come from `\u0000` and `\uD800`–`\uDFFF` escapes (raw control characters are not JSON, and
 * isUtf8 refuses encoded surrogates); nesting was bounded by `checkJsonStructure` before parsing.
 * True means "walk it": an escaped backslash in text only costs the walk.
 */
export function mayHoldUnstorableText (raw: Buffer): boolean {
  return raw.includes('\\u0000') || raw.includes('\\ud') || raw.includes('\\uD')
}

/**
 * Postgres cannot store U+0000 in text or jsonb, and a lone UTF-16 surrogate (from a `\ud800`
 * escape) would be silently replaced on the way in. Walks the whole parsed body, unknown fields
 * included (a dead letter stores them), iteratively so hostile nesting cannot overflow the stack
 * (nesting itself is bounded on the raw bytes, by `checkJsonStructure`).
 */
export function findUnstorableText (body: unknown): PayloadError | undefined {
  const stack: Array<{ value: unknown, path: string }> = [{ value: body, path: '' }]
  while (stack.length > 0) {
    const { value, path } = stack.pop()!
    if (typeof value === 'string') {
      const problem = textProblem(value)
      if (problem) return new PayloadError(path || 'body', problem)
    } else if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) stack.push({ value: value[i], path: `${path}[${i}]` })
    } else if (value !== null && typeof value === 'object') {
      for (const [key, child] of Object.entries(value)) {
        const childPath = path ? `${path}.${key}` : key
        const keyProblem = textProblem(key)
        if (keyProblem) return new PayloadError(childPath, `has a key that ${keyProblem}`)
        stack.push({ value: child, path: childPath })
      }
    }
  }
  return undefined
}

function textProblem (text: string): string | undefined {
  if (text.includes('\u0000')) return 'contains the NUL character (U+0000), which Postgres cannot store'
  if (!text.isWellFormed()) return 'contains a lone UTF-16 surrogate (not valid Unicode)'
  return undefined
}
