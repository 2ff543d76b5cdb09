import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { completedDelivery } from '../scripts/deliveries.ts'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { TEST_SECRET } from './helper.ts'
import { ROOT } from './support/compiled.ts'
import { composeProject, composeTool, type ComposeProject } from './support/compose.ts'
import { buildImage, ensureBaseImages, freePort, plainEnv, publishedPorts, requiresEngine, timedSteps, type ContainerEngine } from './support/container-engine.ts'
import { runProcess } from './support/process.ts'

/**
 * docker-compose.yml as operators run it (the file as committed; only the tool's options and the
 * variables it reads are ours), with Docker Compose v2 against the engine: postgres, then
 * migrate, then webhook; a delivery through the port published on 127.0.0.1; the data kept
 * across down and up; the restart policy after a crash.
 */

t.setTimeout(20 * 60_000)

const KIT = join(ROOT, 'clients/python/book_completion_webhook.py')

/** `compose up -d`, running the health checks meanwhile (podman has no timers without systemd); how long it took. */
async function up (project: ComposeProject): Promise<{ code: number | null, stderr: string, ms: number }> {
  const state = { done: false }
  const upping = project.run(['up', '-d']).finally(() => { state.done = true })
  while (!state.done) {
    await project.checkHealth()
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  return upping
}

async function state (engine: ContainerEngine, container: string): Promise<{ Status: string, ExitCode: number, StartedAt: string, FinishedAt: string, Health?: { Status: string } }> {
  return JSON.parse((await engine.run(['inspect', '--format', '{{json .State}}', container])).stdout)
}

/** Runs the health checks until the container reports healthy; the ms it took, or undefined past the timeout. */
async function healthy (engine: ContainerEngine, project: ComposeProject, container: string, timeoutMs = 60_000): Promise<number | undefined> {
  const begun = Date.now()
  while (Date.now() - begun < timeoutMs) {
    await project.checkHealth()
    if ((await state(engine, container).catch(() => undefined))?.Health?.Status === 'healthy') return Date.now() - begun
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  return undefined
}

const engine = await requiresEngine(t, 'docker-compose.yml up with the engine')
const tool = engine ? await composeTool() : undefined
if (typeof tool === 'string') t.test('docker-compose.yml up with the engine', { skip: tool }, () => {})
if (engine && Array.isArray(tool)) {
  t.test('up: postgres healthy → migrate completed → webhook healthy; a signed delivery; down and up keep the book; restart after a crash', async (t) => {
    const begun = Date.now()
    const [build, postgresBase] = await Promise.all([buildImage(), ensureBaseImages(engine, ['postgres:15-bookworm'])])
    t.comment(`the image and the Postgres stand-in ready: ${Date.now() - begun} ms (${[...timedSteps(build.output), ...timedSteps(postgresBase.stderr)].join('; ')})`)
    const port = await freePort()
    // --env-file: a .env in the checkout (a developer's) is not this test's.
    const envDir = await mkdtemp(join(tmpdir(), 'bcw-compose-'))
    t.teardown(() => rm(envDir, { recursive: true, force: true }))
    const envFile = join(envDir, 'env')
    await writeFile(envFile, '')
    const name = `bcwtest${randomUUID().slice(0, 8)}`
    const project = await composeProject(t, engine, tool, name, {
      POSTGRES_PASSWORD: randomBytes(12).toString('hex'),
      WEBHOOK_SECRET: TEST_SECRET,
      WEBHOOK_PUBLISH: `127.0.0.1:${port}`,
    })
    const compose = (args: string[], timeoutMs?: number) => project.run(['--env-file', envFile, ...args], timeoutMs)

    const config = await compose(['config', '--quiet'])
    t.equal(config.code, 0, `compose accepts the file as it is: ${config.stderr.trim()}`)

    const first = await up({ ...project, run: compose })
    t.equal(first.code, 0, `compose up -d (${Math.round(first.ms)} ms): ${first.stderr.trim().split('\n').slice(-3).join(' | ')}`)
    const [postgres, migrate] = await Promise.all([state(engine, project.container('postgres')), state(engine, project.container('migrate'))])
    t.equal(postgres.Health?.Status, 'healthy', 'postgres is healthy')
    t.match(migrate, { Status: 'exited', ExitCode: 0 }, 'migrate ran to completion')
    const webhookHealthyMs = await healthy(engine, project, project.container('webhook'))
    t.ok(webhookHealthyMs !== undefined, 'webhook is healthy')
    const webhook = await state(engine, project.container('webhook'))
    t.ok(Date.parse(migrate.StartedAt) >= Date.parse(postgres.StartedAt), 'migrate started after postgres')
    t.ok(Date.parse(webhook.StartedAt) >= Date.parse(migrate.FinishedAt), 'webhook started after migrate finished')
    t.comment(`compose up: ${Math.round(first.ms)} ms to started, webhook healthy ${webhookHealthyMs} ms later`)

    const ports = await publishedPorts(engine, project.container('webhook'))
    t.same(ports['3001/tcp'], [{ HostIp: '127.0.0.1', HostPort: String(port) }], `published on 127.0.0.1:${port} only`)

    const user = await compose(['exec', '-T', 'postgres', 'psql', '-U', 'webhook', '-d', 'books', '-c', "INSERT INTO users (id) VALUES ('compose-user')"])
    t.equal(user.code, 0, `a user in the stack's database: ${user.stderr.trim()}`)

    const delivery = completedDelivery({ userId: 'compose-user', chapters: 2 })
    const spool = join(envDir, 'spool')
    const sent = await runProcess('python3', [KIT, 'send', '--max-attempts', '3', '-'], {
      env: plainEnv({ WEBHOOK_URL: `http://127.0.0.1:${port}${BOOK_COMPLETION_PATH}`, WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool, PYTHONDONTWRITEBYTECODE: '1' }),
      stdin: JSON.stringify(delivery),
    })
    t.equal(sent.code, 0, `the kit's signed delivery through the published port: ${sent.stderr.trim()}`)
    t.match(sent.stderr, /: 200\b.*; delivered/, '200')
    const show = () => compose(['exec', '-T', 'webhook', 'npm', 'run', '--silent', 'deliveries', '--', 'show', delivery.job_id])
    const shown = await show()
    t.equal(shown.code, 0, `docker compose exec webhook npm run deliveries -- show: ${shown.stderr.trim()}`)
    t.match(shown.stdout, /^status +COMPLETED$/m, 'the book is stored')

    const down = await compose(['down', '-t', '15'])
    t.comment(`down: ${Math.round(down.ms)} ms`)
    t.equal(down.code, 0, `down (volumes kept): ${down.stderr.trim().split('\n').slice(-2).join(' | ')}`)
    const volumes = await engine.run(['volume', 'ls', '-q', '--filter', `label=com.docker.compose.project=${name}`])
    t.match(volumes.stdout, /postgres-data/, 'the data volume is still there')
    const second = await up({ ...project, run: compose })
    t.equal(second.code, 0, `up again (${Math.round(second.ms)} ms)`)
    t.ok(await healthy(engine, project, project.container('webhook')) !== undefined, 'webhook healthy again')
    const again = await show()
    t.equal(again.code, 0, `the job after down and up: ${again.stderr.trim()}`)
    t.match(again.stdout, /^status +COMPLETED$/m, 'the book is still there')

    // A crash: node killed (from the host: an exec session would die with the container), tini exits with it;
    // `restart: unless-stopped`.
    const container = project.container('webhook')
    const before = await state(engine, container)
    const init = Number((await engine.run(['inspect', '--format', '{{.State.Pid}}', container])).stdout.trim())
    const [nodePid] = (await readFile(`/proc/${init}/task/${init}/children`, 'utf8')).trim().split(/\s+/).map(Number)
    t.match(await readFile(`/proc/${nodePid}/cmdline`, 'utf8'), /^node\0dist\/server\.js\0$/, 'the node process under tini')
    process.kill(nodePid!, 'SIGKILL')
    let restarted: number | undefined
    const killedAt = Date.now()
    while (Date.now() - killedAt < 60_000) {
      const now = await state(engine, container).catch(() => undefined)
      if (now?.Status === 'running' && Date.parse(now.StartedAt) > Date.parse(before.StartedAt)) {
        restarted = Date.now() - killedAt
        break
      }
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    const restartCount = (await engine.run(['inspect', '--format', '{{.RestartCount}}', container])).stdout.trim()
    t.comment(`after node was killed: ${restarted === undefined ? 'not restarted within 60 s' : `restarted by ${engine.name} in ${restarted} ms`} (RestartCount ${restartCount})`)
    t.ok(restarted !== undefined, `${engine.name} honours restart: unless-stopped`)
    if (restarted !== undefined) t.ok(await healthy(engine, project, container) !== undefined, 'and it is healthy again')
  })
}
