import { readFile } from 'node:fs/promises'
import t from 'tap'
import { sql } from 'drizzle-orm'
import { completedDelivery } from '../scripts/deliveries.ts'
import { createUser, deliver, freshDatabase, startApp, testConfig, type Answer } from './helper.ts'

/** The example queries of docs/DATA.md, run as written against tables filled by real deliveries. */

const markdown = await readFile(new URL('../docs/DATA.md', import.meta.url), 'utf8')
// Each `### heading` section, and the SQL block in it.
const examples = markdown.split(/^### /m).slice(1).flatMap((section) => {
  const text = /```sql\n([\s\S]*?)```/.exec(section)?.[1]
  return text ? [{ heading: section.slice(0, section.indexOf('\n')).trim(), text }] : []
})

const running = await startApp(t, testConfig(await freshDatabase(t)))
// What a reading service would do: the documented SQL text as it is, `$n` bound to parameters.
const client = {
  query: async (text: string, params: unknown[]) => {
    const pieces = text.replace(/^--.*$/gm, '').split(/\$(\d+)/)
    const statement = sql.join(pieces.map((piece, i) => i % 2 === 0 ? sql.raw(piece) : sql`${params[Number(piece) - 1]}`))
    return { rows: await running.query(statement) }
  },
}
const PARAMETERS: Record<string, string> = {}
function run (heading: string): Promise<Array<Record<string, unknown>>> {
  const example = examples.find((candidate) => candidate.heading === heading)
  if (!example) throw new Error(`docs/DATA.md has no query under "### ${heading}"`)
  const names = [...example.text.matchAll(/^-- \$\d+: (.+)$/gm)].map(([, name]) => name!.trim())
  return client.query(example.text, names.map((name) => PARAMETERS[name])).then((result) => result.rows)
}

await createUser(running, 'reader-a')
const sent = [
  completedDelivery({ userId: 'reader-a', chapters: 3 }),
  completedDelivery({ userId: 'reader-a', chapters: 2 }),
  completedDelivery({ userId: 'reader-a', chapters: 4 }),
]
sent[0]!.book_data.book_title = 'Premier livre'
sent[1]!.book_data.book_title = 'Deuxième livre'
sent[2]!.book_data.book_title = 'Troisième livre'
const answers: Answer[] = []
for (const delivery of sent) answers.push(await deliver(running.endpoint, delivery))
const deadLetter = await deliver(running.endpoint, completedDelivery({ userId: 'nobody-here' }))

PARAMETERS['user id'] = 'reader-a'
PARAMETERS['book id'] = answers[2]!.body.bookId as string
PARAMETERS['job id'] = sent[2]!.job_id

t.test('every SQL block of DATA.md is one of the queries checked here', async (t) => {
  t.same(examples.map((example) => example.heading), [
    'The latest books of a user',
    'A book with its chapters, in order',
    'Where a job is (the front end\'s polling)',
    'Deliveries waiting in the dead-letter table',
    'Books changed since a reader last looked',
  ])
})

t.test('the latest books of a user: newest first, with chapter and word counts from the chapters', async (t) => {
  t.same(answers.map((answer) => answer.status), [200, 200, 200])
  const rows = await run('The latest books of a user')
  t.same(rows.map((row) => row.title), ['Troisième livre', 'Deuxième livre', 'Premier livre'])
  t.same(rows.map((row) => row.chapters), [4, 2, 3])
  const words = (delivery: typeof sent[number]) => delivery.book_data.chapters.reduce((sum, chapter) => sum + chapter.content.match(/\S+/g)!.length, 0)
  t.same(rows.map((row) => row.words), [words(sent[2]!), words(sent[1]!), words(sent[0]!)], 'counted words, not the sender\'s 15000')
})

t.test('a book with its chapters, in order, in one statement', async (t) => {
  const [book, ...others] = await run('A book with its chapters, in order')
  t.equal(others.length, 0)
  t.equal(book?.title, 'Troisième livre')
  t.same(book?.outline, sent[2]!.book_data.outline)
  const chapters = book?.chapters as Array<{ position: number, content: string }>
  t.same(chapters.map((chapter) => chapter.position), [1, 2, 3, 4])
  t.same(chapters.map((chapter) => chapter.content), sent[2]!.book_data.chapters.map((chapter) => chapter.content))
})

t.test('where a job is', async (t) => {
  const rows = await run('Where a job is (the front end\'s polling)')
  t.match(rows, [{ status: 'COMPLETED', error: null, book_id: PARAMETERS['book id'] }])
  t.ok(rows[0]?.completed_at)
})

t.test('deliveries waiting in the dead-letter table', async (t) => {
  t.equal(deadLetter.status, 422)
  const rows = await run('Deliveries waiting in the dead-letter table')
  t.match(rows, [{ reason: 'user "nobody-here" does not exist', webhook_id: /^msg_/ }])
})

t.test('books changed since a reader last looked: the overlap, the order, the index', async (t) => {
  PARAMETERS['last updated_at seen'] = new Date(Date.now() + 60_000).toISOString()
  const overlapping = await run('Books changed since a reader last looked')
  t.same(overlapping.map((row) => row.id), answers.map((answer) => answer.body.bookId), 'a minute ahead, the two-minute overlap still returns them, oldest first')
  PARAMETERS['last updated_at seen'] = new Date(Date.now() + 10 * 60_000).toISOString()
  t.same(await run('Books changed since a reader last looked'), [], 'past the overlap: nothing')

  const example = examples.find((candidate) => candidate.heading === 'Books changed since a reader last looked')!
  const plan = await running.app.db.transaction(async (tx) => {
    await tx.rows(sql`SET LOCAL enable_seqscan = off`)
    return tx.rows<Record<string, string>>(sql.raw(`EXPLAIN ${example.text.replace(/^--.*$/gm, '').replace('$1::timestamptz', 'now()').replace(/;\s*$/, '')}`))
  })
  t.match(plan.map((row) => Object.values(row)[0]).join('\n'), /books_updated_at_idx/, 'the query can use books_updated_at_idx')
})
