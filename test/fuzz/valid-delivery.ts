import fc from 'fast-check'
import type { CompletedDelivery } from '../../src/webhooks/payload.ts'

/**
 * Arbitrary valid deliveries: text from every Unicode plane (no NUL, no lone surrogate), Markdown,
 * long strings, 1–200 chapters, unknown extra fields at every level, dates in every accepted form.
 */

export const FUZZ_USERS = ['fuzz-user-a', 'fuzz-user-b'] as const
export const FUZZ_DEFAULT_USER = 'fuzz-default-user'

/** Any Unicode scalar value from any plane; NUL (which Postgres refuses) becomes U+FFFD. */
export const anyText = (maxLength: number, minLength = 0) =>
  fc.string({ unit: 'binary', minLength, maxLength }).map((text) => text.replaceAll('\u0000', '\uFFFD'))

const markdownBlock = fc.oneof(
  anyText(80).map((text) => `# ${text}`),
  anyText(80).map((text) => `## ${text}`),
  anyText(400),
  fc.array(anyText(60), { minLength: 1, maxLength: 6 }).map((items) => items.map((item) => `- ${item}`).join('\n')),
  anyText(200).map((code) => `\`\`\`python\n${code}\n\`\`\``),
  fc.tuple(anyText(30), anyText(30)).map(([text, path]) => `**${text}** _${path}_ [lien](https://example.com/${encodeURIComponent(path)})`),
  fc.tuple(anyText(20), anyText(20)).map(([a, b]) => `| col | val |\n| --- | --- |\n| ${a} | ${b} |`),
  anyText(100).map((text) => `> ${text}\n>\n> — « ${text} » 😊`)
)
const markdown = fc.array(markdownBlock, { minLength: 0, maxLength: 8 }).map((blocks) => blocks.join('\n\n'))

/** Up to 100,000 characters: a random piece repeated (cheap to generate, long to store). */
const longText = (maxChars: number) => fc.tuple(anyText(40, 1), fc.integer({ min: 1, max: 5_000 }))
  .map(([piece, times]) => piece.repeat(times))
  .map((text) => Array.from(text).slice(0, maxChars).join(''))

const content = fc.oneof(
  { weight: 6, arbitrary: markdown },
  { weight: 3, arbitrary: anyText(300) },
  { weight: 1, arbitrary: fc.constant('') }
)

const KNOWN_KEYS = new Set([
  'job_id', 'status', 'timestamp', 'environment', 'user_id', 'error', 'book_data',
  'book_title', 'topic', 'goal', 'outline', 'chapters', 'generated_at', 'word_count', 'chapter_count',
  'title', 'content', 'description',
])

/** Unknown fields (ignored by the service); never keys the JSON parser refuses as prototype poisoning. */
const extraFields = fc.dictionary(
  anyText(12, 1).filter((key) => !KNOWN_KEYS.has(key)),
  fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' }),
  { maxKeys: 3 }
).filter((extra) => !/"(__proto__|constructor|prototype)"/.test(JSON.stringify(extra)) && !JSON.stringify(extra).includes('\\u0000'))

const maybeExtra = fc.option(extraFields, { nil: undefined, freq: 3 })

/** An ISO 8601 date-time in one of the accepted forms, with the instant it means. */
const dateTime = fc.record({
  at: fc.date({ min: new Date('1971-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }),
  form: fc.constantFrom('z', 'offset', 'naive', 'space'),
  offsetMinutes: fc.integer({ min: -12 * 60, max: 14 * 60 }).map((m) => m - (m % 15)),
}).map(({ at, form, offsetMinutes }) => ({ instant: at.getTime(), text: formatDate(at, form, offsetMinutes) }))

function formatDate (at: Date, form: string, offsetMinutes: number): string {
  if (form === 'z') return at.toISOString()
  if (form === 'naive') return at.toISOString().slice(0, -1)
  if (form === 'space') return at.toISOString().replace('T', ' ')
  const local = new Date(at.getTime() + offsetMinutes * 60_000).toISOString().slice(0, -1)
  const sign = offsetMinutes < 0 ? '-' : '+'
  const abs = Math.abs(offsetMinutes)
  return `${local}${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`
}

const chapter = fc.record({ title: anyText(120), content, description: anyText(200), extra: maybeExtra })
  .map(({ extra, ...fields }) => ({ ...extra, ...fields }))

const outlineItem = fc.record({ title: anyText(100), description: fc.option(anyText(200), { nil: undefined }), extra: maybeExtra })
  .map(({ extra, description, ...fields }) => ({ ...extra, ...fields, ...(description === undefined ? {} : { description }) }))

export interface ValidCase {
  /** A completed delivery with unknown fields at every level, which the service ignores. */
  delivery: CompletedDelivery & Record<string, unknown>
  generatedAtInstant: number
  expectedUser: string
}

interface ValidOptions { maxChapters: number }

/** A valid `completed` delivery. The caller makes job_id unique (a suffix) so cases stay independent. */
export function validDelivery ({ maxChapters }: ValidOptions = { maxChapters: 200 }): fc.Arbitrary<ValidCase> {
  return fc.record({
    jobIdPrefix: anyText(60),
    user: fc.constantFrom<string | undefined>(...FUZZ_USERS, undefined),
    environment: fc.constantFrom('production', 'staging', 'development', ''),
    error: fc.constantFrom(undefined, null, 'ignored for completed'),
    timestamp: dateTime,
    generatedAt: dateTime,
    title: fc.oneof({ weight: 5, arbitrary: anyText(200, 1) }, { weight: 1, arbitrary: anyText(1_000, 1000) }),
    topic: fc.oneof({ weight: 5, arbitrary: anyText(200) }, { weight: 1, arbitrary: longText(100_000) }),
    goal: anyText(300),
    outline: fc.array(outlineItem, { maxLength: 20 }),
    chapters: fc.array(chapter, { minLength: 1, maxLength: maxChapters }),
    longChapter: fc.option(fc.tuple(fc.nat(), longText(100_000)), { freq: 8, nil: undefined }),
    wordCount: fc.integer({ min: 0, max: 2_147_483_647 }),
    chapterCount: fc.integer({ min: 0, max: 2_147_483_647 }),
    topExtra: maybeExtra,
    bookExtra: maybeExtra,
  }).map((c) => {
    const chapters = c.chapters.slice()
    if (c.longChapter) {
      const [at, text] = c.longChapter
      const index = at % chapters.length
      chapters[index] = { ...chapters[index]!, content: text }
    }
    const delivery = {
      ...c.topExtra,
      job_id: c.jobIdPrefix,
      status: 'completed' as const,
      timestamp: c.timestamp.text,
      environment: c.environment,
      ...(c.user === undefined ? {} : { user_id: c.user }),
      ...(c.error === undefined ? {} : { error: c.error }),
      book_data: {
        ...c.bookExtra,
        book_title: c.title,
        topic: c.topic,
        goal: c.goal,
        outline: c.outline,
        chapters,
        generated_at: c.generatedAt.text,
        word_count: c.wordCount,
        chapter_count: c.chapterCount,
      },
    }
    return { delivery, generatedAtInstant: c.generatedAt.instant, expectedUser: c.user ?? FUZZ_DEFAULT_USER }
  })
}

/** Job ids at most 255 code points: the generated prefix, then a suffix unique to this run. */
export function withUniqueJobId (prefix: string, unique: string): string {
  return Array.from(prefix).slice(0, 255 - unique.length - 1).join('') + `#${unique}`
}
