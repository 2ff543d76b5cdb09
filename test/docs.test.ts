import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { EnvSchema } from '../src/config.ts'

/** The documentation stands on its own and stays true to the code it describes. */

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const README_MAX_LINES = 150

const docs = (await readdir(join(ROOT, 'docs'))).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)
const pages = ['README.md', 'bench/README.md', ...docs]
const texts = new Map(await Promise.all(pages.map(async (page) => [page, await readFile(join(ROOT, page), 'utf8')] as const)))

/** The text a reader sees as prose: fenced blocks and inline code are not links. */
const prose = (markdown: string) => markdown.replace(/^```[^]*?^```/gm, '').replace(/`[^`\n]*`/g, '')

/** GitHub's anchor of a heading: its text, lower case, punctuation dropped, spaces as hyphens; repeats get -1, -2… */
function anchorsOf (markdown: string): Set<string> {
  const anchors = new Set<string>()
  const seen = new Map<string, number>()
  for (const [, heading] of markdown.replace(/^```[^]*?^```/gm, '').matchAll(/^#{1,6} +(.+?) *#*$/gm)) {
    const text = heading!.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    const slug = text.toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '').replaceAll(' ', '-')
    const count = seen.get(slug) ?? 0
    seen.set(slug, count + 1)
    anchors.add(count === 0 ? slug : `${slug}-${count}`)
  }
  return anchors
}

t.test('every relative link of README.md, bench/README.md and docs/*.md resolves, #anchors included', async (t) => {
  let checked = 0
  for (const [page, markdown] of texts) {
    for (const [, target] of prose(markdown).matchAll(/\]\(([^)\s]+)(?: "[^"]*")?\)/g)) {
      if (/^[a-z][a-z+.-]*:/i.test(target!)) continue // https:, mailto:
      checked++
      const [path = '', anchor] = target!.split('#', 2)
      const file = path === '' ? join(ROOT, page) : resolve(ROOT, dirname(page), decodeURIComponent(path))
      const where = `${page} → ${target}`
      if (relative(ROOT, file).startsWith('..')) {
        t.fail(`${where}: outside the repository`)
        continue
      }
      if (!existsSync(file)) {
        t.fail(`${where}: no such file`)
        continue
      }
      if (anchor === undefined) continue
      const linked = texts.get(relative(ROOT, file)) ?? await readFile(file, 'utf8')
      if (!anchorsOf(linked).has(anchor)) t.fail(`${where}: no heading with the anchor #${anchor}`)
    }
  }
  t.ok(checked > 40, `${checked} links checked`)
})

t.test('the anchors are GitHub\'s', async (t) => {
  t.same([...anchorsOf('# A\n## The front end\'s test request\n### Method (`npm run bench`, `bench/bench.ts`)\n## A\n```\n# not a heading\n```\n')],
    ['a', 'the-front-ends-test-request', 'method-npm-run-bench-benchbenchts', 'a-1'])
})

t.test('the repository stands on its own: no page points at the contract outside it', async (t) => {
  for (const [page, markdown] of texts) t.notMatch(markdown, /CONTRACT\.md|\.\.\/shared\//, `${page} does not point outside the repository`)
})

t.test('the configuration table of docs/OPERATIONS.md has every variable of EnvSchema, and only those (and compose\'s)', async (t) => {
  const section = texts.get('docs/OPERATIONS.md')!.split(/^## /m).find((part) => part.startsWith('Configuration\n'))
  t.ok(section, 'docs/OPERATIONS.md has a "## Configuration" section')
  const rows = (section ?? '').split('\n').filter((line) => line.startsWith('| `'))
  const tables = (section ?? '').split(/\n\n+/).filter((block) => block.startsWith('|'))
  t.equal(tables.length, 1, 'one table')
  const listed = rows.flatMap((row) => [...row.split('|')[1]!.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map(([, name]) => name!))
  const variables = Object.keys(EnvSchema.properties)
  t.same(variables.filter((variable) => !listed.includes(variable)), [], 'every variable the service reads has a row')
  t.same(listed.filter((name) => !variables.includes(name) && !name.startsWith('POSTGRES_')), [], 'no row for a variable the service does not read')
  t.equal(new Set(listed).size, listed.length, 'each variable once')
})

t.test(`README.md: at most ${README_MAX_LINES} lines, every test file and every dependency in its tables`, async (t) => {
  const readme = texts.get('README.md')!
  const lines = readme.split('\n').length - (readme.endsWith('\n') ? 1 : 0)
  t.ok(lines <= README_MAX_LINES, `${lines} lines`)

  const testFiles = (await readdir(join(ROOT, 'test'))).filter((name) => name.endsWith('.test.ts')).map((name) => name.replace(/\.test\.ts$/, ''))
  const testsSection = readme.split(/^## /m).find((part) => part.startsWith('Tests\n')) ?? ''
  t.same(testFiles.filter((name) => !testsSection.includes(`\`${name}\``)), [], 'the test table names every test/*.test.ts')

  const { dependencies, devDependencies } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'))
  const dependencySection = readme.split(/^## /m).find((part) => part.startsWith('Dependencies and why\n')) ?? ''
  const named = new Set(dependencySection.split('\n').filter((line) => line.startsWith('| ')).flatMap((line) => line.split('|')[1]!.split(/[\s,()]+/)))
  t.same(Object.keys({ ...dependencies, ...devDependencies }).filter((name) => !named.has(name)), [], 'the dependency table gives each package of package.json a reason')
})
