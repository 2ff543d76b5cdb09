import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { once } from 'node:events'
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stripVTControlCharacters } from 'node:util'
import { PGlite } from '@electric-sql/pglite'
import { sql } from 'drizzle-orm'
import t from 'tap'
import { loadConfig } from '../src/config.ts'
import { loggerOptions } from '../src/logger.ts'
import { completedDelivery, frontEndTestRequest } from '../scripts/deliveries.ts'
import { deliver, signedHeaders, startApp, testConfig } from './helper.ts'
import { spawnServer } from './support/process.ts'

const root = fileURLToPath(new URL('..', import.meta.url))
const UNSIGNED_WARNING = 'development: requests without signature headers are accepted'

/** The front end's own test request (contract section 8), indented as its curl sends it. */
const curlBody = () => JSON.stringify(frontEndTestRequest(), null, 4)

t.test('npm run dev on a fresh data dir answers the section 8 request with 200', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'bcw-dev-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0', HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_LEVEL: 'info' }
  delete env.DATABASE_URL
  delete env.ENVIRONMENT
  delete env.WEBHOOK_SECRET
  const dev = spawn('npm', ['run', 'dev'], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const exited = new Promise<number | null>((resolve) => dev.on('exit', resolve))
  const stop = () => { try { process.kill(-dev.pid!, 'SIGTERM') } catch {} }
  t.teardown(stop)

  const startedAt = Date.now()
  const endpoint = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dev server did not start:\n${output}`)), 30_000)
    dev.stdout.on('data', (chunk) => {
      output += chunk
      const match = output.match(/webhook endpoint: POST (http:\/\/\S+)"/)
      if (match) { clearTimeout(timer); resolve(match[1]!) }
    })
    dev.stderr.on('data', (chunk) => { output += chunk })
  })
  t.comment(`dev start on a fresh embedded database: ${Date.now() - startedAt} ms`)
  t.match(endpoint, /\/api\/webhooks\/book-completion$/, 'the log gives the full webhook URL')
  const warnings = output.split('\n').filter((line) => line.includes(UNSIGNED_WARNING))
  t.equal(warnings.length, 1, 'one warning at start that unsigned requests are accepted')
  t.match(JSON.parse(warnings[0] ?? '{}'), { level: 40 }, 'at warn level, as a JSON line: stdout is not a terminal')

  const body = curlBody()
  const jobId = JSON.parse(body).job_id as string
  const answer = await deliver(endpoint, body, { 'content-type': 'application/json' })
  t.equal(answer.status, 200)
  t.match(answer.body, { success: true, jobId, created: true, chaptersCreated: 1, wordCount: 100 })
  for (let i = 0; i < 50 && !output.includes('"outcome"'); i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.match(output, /"outcome":"book_created".*"verified":false/, 'logged as unverified')

  const forged = await deliver(endpoint, body, { ...signedHeaders(body), 'webhook-signature': 'v1,Zm9yZ2Vk' })
  t.equal(forged.status, 401, 'a request carrying signature headers is verified even in development')

  stop()
  await exited
  const db = await PGlite.create(dataDir)
  t.teardown(() => db.close())
  const { rows } = await db.query<{ user_id: string, status: string, chapters: number }>(`
    SELECT j.user_id, j.status::text, (SELECT count(*)::int FROM chapters c WHERE c.book_id = b.id) AS chapters
    FROM book_jobs j JOIN books b ON b.job_id = j.id WHERE j.id = $1`, [jobId])
  t.same(rows, [{ user_id: 'dev-user', status: 'COMPLETED', chapters: 1 }], 'job, book and chapter persisted on disk, owned by dev-user')
})

t.test('the embedded database: migrations, the dev-user seed, and signed deliveries', async (t) => {
  const running = await startApp(t, testConfig(undefined, { environment: 'development', dataDir: 'memory://' }))
  const anonymous = completedDelivery({ chapters: 2 })
  const unsigned = await deliver(running.endpoint, anonymous, { 'content-type': 'application/json' })
  t.equal(unsigned.status, 200)
  const [job] = await running.query<{ user_id: string }>(sql`SELECT user_id FROM book_jobs WHERE id = ${anonymous.job_id}`)
  t.equal(job?.user_id, 'dev-user')

  const signed = await deliver(running.endpoint, completedDelivery({ chapters: 1 }))
  t.equal(signed.status, 200, 'a correctly signed request passes in development')
  const stale = completedDelivery({ chapters: 1 })
  const body = JSON.stringify(stale)
  const old = await deliver(running.endpoint, body, signedHeaders(body, { at: new Date(Date.now() - 3_600_000) }))
  t.equal(old.status, 401, 'and a stale one is refused')
})

t.test('npm run dev on a terminal, with .env copied from .env.example: .env is read, logs are readable', {
  skip: existsSync('/usr/bin/script') ? false : 'needs script(1) from util-linux to give npm run dev a terminal',
}, async (t) => {
  // A checkout of its own (the real package.json, links to src and node_modules), so that its
  // .env is not the developer's.
  const checkout = await mkdtemp(join(tmpdir(), 'bcw-dotenv-'))
  t.teardown(() => rm(checkout, { recursive: true, force: true }))
  await copyFile(join(root, 'package.json'), join(checkout, 'package.json'))
  for (const entry of ['src', 'node_modules', 'tsconfig.json']) await symlink(join(root, entry), join(checkout, entry))
  const dataDir = join(checkout, 'data-from-dotenv')
  const example = await readFile(join(root, '.env.example'), 'utf8')
  await writeFile(join(checkout, '.env'), `${example}\n# added by the test\nHOST=127.0.0.1\nPORT=0\nDATA_DIR=${dataDir}\nLOG_LEVEL=error\n`)

  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'info', TERM: 'dumb' }
  for (const variable of ['ENVIRONMENT', 'DATABASE_URL', 'WEBHOOK_SECRET', 'PORT', 'HOST', 'DATA_DIR']) delete env[variable]
  const dev = await spawnServer(t, 'script', ['-qec', 'npm run dev', '/dev/null'], { env, cwd: checkout, timeoutMs: 30_000 })
  const output = () => stripVTControlCharacters(dev.output())
  // The endpoint line is logged just after Fastify's "listening" one; pino-pretty writes from its own thread.
  await dev.waitFor('both', /webhook endpoint: POST/, 10_000)

  t.match(output(), /webhook endpoint: POST http:\/\/127\.0\.0\.1:\d+\//, 'HOST and PORT=0 came from .env')
  t.ok(existsSync(join(dataDir, 'PG_VERSION')), 'the embedded database is in the DATA_DIR of .env')
  t.match(output(), /INFO.*webhook endpoint/, 'LOG_LEVEL=info from the environment wins over .env\'s error')
  t.match(output(), new RegExp(`^\\[\\d{2}:\\d{2}:\\d{2}\\.\\d{3}\\] WARN: ${UNSIGNED_WARNING}`, 'm'), 'pretty-printed: time, level, message')
  t.equal(output().split(UNSIGNED_WARNING).length - 1, 1, 'the unsigned-requests warning, once')
  t.notMatch(output(), /"level":/, 'no JSON lines on a terminal')

  const answer = await deliver(`${dev.url}/api/webhooks/book-completion`, curlBody(), { 'content-type': 'application/json' })
  t.match(answer, { status: 200, body: { success: true, created: true, chaptersCreated: 1 } }, 'the section 8 request: 200 with .env.example as .env')

  dev.child.kill('SIGTERM')
  t.equal(await dev.exited, 0, 'stops cleanly')
})

t.test('a .env that cannot be read stops start-up with one line', async (t) => {
  const checkout = await mkdtemp(join(tmpdir(), 'bcw-bad-dotenv-'))
  t.teardown(() => rm(checkout, { recursive: true, force: true }))
  await mkdir(join(checkout, '.env'))
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, ENVIRONMENT: 'development', DATA_DIR: 'memory://', PORT: '0', HOST: '127.0.0.1' }
  const started = spawn(process.execPath, [`--import=${import.meta.resolve('tsx')}`, join(root, 'src/server.ts')], { env, cwd: checkout })
  let stderr = ''
  started.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const [code] = await once(started, 'exit')
  t.equal(code, 1)
  t.match(stderr, /^configuration error: \.env: cannot be read: .+\n$/, 'one line naming the file')
})

t.test('the logger options: readable lines only for a terminal, JSON otherwise', async (t) => {
  const config = loadConfig({ ENVIRONMENT: 'development' })
  t.match(loggerOptions(config, { isTTY: true }), { level: 'info', transport: { target: 'pino-pretty' } })
  t.equal(loggerOptions(config, { isTTY: false }).transport, undefined)
  t.equal(loggerOptions(config, {}).transport, undefined, 'a pipe or a file has no isTTY')
  t.ok(loggerOptions(config, { isTTY: true }).redact, 'redaction either way')
})
