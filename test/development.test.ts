import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { sql } from 'drizzle-orm'
import t from 'tap'
import { request } from 'undici'
import { completedDelivery } from './fixtures.ts'
import { deliver, signedHeaders, startApp, testConfig } from './helper.ts'

/** The front end's own test request, contract section 8, exactly as its curl sends it. */
function frontEndTestRequest (): string {
  const now = new Date().toISOString().replace(/\.\d{3}Z$/, '.000Z')
  return `{
    "job_id": "test-auto-create-${Math.floor(Date.now() / 1000)}",
    "status": "completed",
    "timestamp": "${now}",
    "environment": "development",
    "book_data": {
      "book_title": "Test Auto-Create Job",
      "topic": "Test",
      "goal": "Vérifier création auto",
      "outline": [],
      "chapters": [{ "title": "Chapitre 1", "content": "# Chapitre 1\\n\\nTest", "description": "Test" }],
      "generated_at": "${now}",
      "word_count": 100,
      "chapter_count": 1
    }
  }`
}

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

  const body = frontEndTestRequest()
  const jobId = JSON.parse(body).job_id as string
  const response = await request(endpoint, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  const answer = await response.body.json() as Record<string, unknown>
  t.equal(response.statusCode, 200)
  t.match(answer, { success: true, jobId, created: true, chaptersCreated: 1, wordCount: 100 })
  for (let i = 0; i < 50 && !output.includes('"outcome"'); i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.match(output, /"outcome":"book_created".*"verified":false/, 'logged as unverified')

  const forged = await request(endpoint, { method: 'POST', headers: { ...signedHeaders(body), 'webhook-signature': 'v1,Zm9yZ2Vk' }, body })
  await forged.body.dump()
  t.equal(forged.statusCode, 401, 'a request carrying signature headers is verified even in development')

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
