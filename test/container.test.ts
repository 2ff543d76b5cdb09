import { execFile } from 'node:child_process'
import { chmod, cp, mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { parse } from 'yaml'
import { EnvSchema } from '../src/config.ts'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { completedDelivery } from '../scripts/deliveries.ts'
import { deliver, requiresPostgres, TEST_SECRET } from './helper.ts'
import { spawnServer } from './support/process.ts'
import { adminQuery, createDatabase } from './support/postgres.ts'

const run = promisify(execFile)
const root = new URL('..', import.meta.url).pathname

interface Instruction { keyword: string, args: string, stage: number }

/** The Dockerfile's instructions (continuations joined, comments dropped), with their stage index. */
function parseDockerfile (text: string): Instruction[] {
  const logical = text.replace(/\\\r?\n/g, ' ').split(/\r?\n/).map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
  let stage = -1
  return logical.map((line) => {
    const [keyword = '', ...rest] = line.split(/\s+/)
    if (keyword.toUpperCase() === 'FROM') stage++
    return { keyword: keyword.toUpperCase(), args: rest.join(' '), stage }
  })
}

/** `CMD ["node", "-e", "..."]` (exec form) as its argument list; undefined for the shell form. */
function execForm (args: string): string[] | undefined {
  try {
    const parsed: unknown = JSON.parse(args)
    return Array.isArray(parsed) && parsed.every((part) => typeof part === 'string') ? parsed : undefined
  } catch {
    return undefined
  }
}

const dockerfile = parseDockerfile(await readFile(join(root, 'Dockerfile'), 'utf8'))
const runtimeStage = Math.max(...dockerfile.map((instruction) => instruction.stage))
const runtime = dockerfile.filter((instruction) => instruction.stage === runtimeStage)
const healthcheck = runtime.find((instruction) => instruction.keyword === 'HEALTHCHECK')
const healthcheckCommand = execForm(healthcheck?.args.replace(/^.*?\bCMD\s+/, '') ?? '')
/** The runtime stage's ENV, as `docker run` would start the process with. */
const imageEnv = Object.fromEntries(runtime.filter((instruction) => instruction.keyword === 'ENV')
  .flatMap((instruction) => [...instruction.args.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!])))

t.test('Dockerfile: multi-stage, production dependencies only, non-root, health check, node as PID 1', async (t) => {
  const stages = dockerfile.filter((instruction) => instruction.keyword === 'FROM').map((instruction) => instruction.args)
  t.ok(stages.length >= 2, `multi-stage (${stages.join(' | ')})`)
  t.ok(stages.every((from) => /^node:20(\.[\d.]+)?-(bookworm-)?slim\b/.test(from)), 'every stage is an official Node 20 slim image')
  const build = dockerfile.filter((instruction) => instruction.stage === 0)
  t.ok(build.some((i) => i.keyword === 'RUN' && /npm run build/.test(i.args)), 'the build stage compiles TypeScript')

  const runs = runtime.filter((i) => i.keyword === 'RUN').map((i) => i.args)
  t.ok(runs.some((args) => /npm ci\b.*--omit=dev/.test(args)), 'the runtime stage installs with npm ci --omit=dev')
  t.notOk(runs.some((args) => /npm (ci|install)\b(?!.*--omit=dev)/.test(args)), 'and never installs dev dependencies')
  t.ok(runtime.some((i) => i.keyword === 'COPY' && /--from=build\b.*\/app\/dist/.test(i.args)), 'the compiled code comes from the build stage')
  t.ok(runtime.some((i) => i.keyword === 'COPY' && /^migrations\b/.test(i.args)), 'the migrations are in the image')
  t.equal(imageEnv.ENVIRONMENT, 'production', 'ENVIRONMENT defaults to production')
  t.equal(imageEnv.PORT, '3001')

  const keywords = runtime.map((i) => i.keyword)
  const user = runtime.filter((i) => i.keyword === 'USER').at(-1)
  t.equal(user?.args, 'node', 'runs as the non-root node user')
  t.ok(keywords.lastIndexOf('USER') < keywords.indexOf('CMD'), 'USER comes before CMD')
  t.ok(runtime.some((i) => i.keyword === 'EXPOSE' && i.args.split(/\s+/).includes('3001')), 'EXPOSE 3001')

  t.ok(healthcheckCommand, 'HEALTHCHECK uses the exec form')
  t.equal(healthcheckCommand?.[0], 'node', 'the health check runs node (the slim image has no curl)')
  t.match(healthcheckCommand?.join(' '), /fetch\(.*\/health/, 'with fetch against /health')

  const cmd = runtime.filter((i) => i.keyword === 'CMD').at(-1)
  t.same(execForm(cmd?.args ?? ''), ['node', 'dist/server.js'], 'CMD ["node", "dist/server.js"]: node is PID 1 and gets SIGTERM')
  t.notOk(runtime.some((i) => i.keyword === 'ENTRYPOINT'), 'no entrypoint wraps it')
})

t.test('.dockerignore keeps node_modules, .data, tests and git out; every COPY source exists', async (t) => {
  const ignored = (await readFile(join(root, '.dockerignore'), 'utf8')).split('\n').map((line) => line.trim())
  for (const entry of ['node_modules', '.data', 'test', '.git', '.env', 'dist']) t.ok(ignored.includes(entry), `${entry} is ignored`)
  const sources = dockerfile.filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from'))
    .flatMap((i) => i.args.split(/\s+/).filter((part) => !part.startsWith('--')).slice(0, -1))
  for (const source of sources) {
    t.ok(await stat(join(root, source)).then(() => true, () => false), `${source} exists`)
    t.notOk(ignored.includes(source), `${source} is not ignored`)
  }
})

t.test('docker-compose.yml: postgres healthy → migrate completes → webhook on 3001', async (t) => {
  const compose = parse(await readFile(join(root, 'docker-compose.yml'), 'utf8'), { merge: true })
  const { postgres, migrate, webhook } = compose.services
  t.same(Object.keys(compose.services).sort(), ['migrate', 'postgres', 'webhook'])

  t.match(postgres.image, /^postgres:1[5-9]\b/, 'the official Postgres image, 15 or later')
  t.match(postgres.healthcheck.test.join(' '), /pg_isready/, 'postgres has a health check')
  const [volume] = postgres.volumes as string[]
  const [volumeName, mountPoint] = volume!.split(':')
  t.equal(mountPoint, '/var/lib/postgresql/data')
  t.ok(volumeName! in compose.volumes, `its data is on the named volume ${volumeName}`)

  t.same(migrate.command, ['node', 'dist/migrate.js'], 'migrate runs the compiled migrate entry')
  t.same(migrate.depends_on, { postgres: { condition: 'service_healthy' } }, 'after postgres is healthy')
  t.equal(migrate.restart, 'no', 'once')

  t.same(webhook.depends_on.migrate, { condition: 'service_completed_successfully' }, 'webhook starts after migrate succeeded')
  t.same(webhook.depends_on.postgres, { condition: 'service_healthy' })
  t.ok(webhook.ports.includes('3001:3001'), 'on port 3001')
  t.equal(webhook.command, undefined, 'webhook runs the image CMD')
  t.equal(webhook.image, migrate.image, 'migrate and webhook run the same image')
  t.ok(webhook.build, 'built from the Dockerfile')
  t.equal(webhook.healthcheck.test[0], 'CMD')
  t.match(webhook.healthcheck.test.slice(1).join(' '), /^node -e .*fetch\('http:\/\/127\.0\.0\.1:3001\/health'/, 'webhook health check: node fetch /health')
  t.ok(Number.parseInt(webhook.stop_grace_period) > 10, 'compose waits longer than the 10 s shutdown grace')

  const known = Object.keys(EnvSchema.properties)
  for (const variable of Object.keys(webhook.environment)) t.ok(known.includes(variable), `${variable} is read by the service`)
  for (const service of [migrate, webhook]) {
    t.match(service.environment.DATABASE_URL, /^postgres:\/\/.*@postgres:5432\//, 'DATABASE_URL points at the postgres service')
  }
  t.match(webhook.environment.WEBHOOK_SECRET, /^\$\{WEBHOOK_SECRET:\?/, 'start-up refuses to go on without WEBHOOK_SECRET')
})

if (await requiresPostgres(t, 'the image runtime: npm ci --omit=dev, migrate and serve as a non-root user')) {
  t.test('the image runtime: production dependencies only, migrate, then serve a signed delivery as nobody', async (t) => {
    // What the Dockerfile does, without Docker: compile, then the runtime stage's files in a fresh dir.
    const app = await mkdtemp(join(tmpdir(), 'bcw-image-'))
    t.teardown(() => rm(app, { recursive: true, force: true }))
    for (const file of ['package.json', 'package-lock.json', 'migrations']) await cp(join(root, file), join(app, file), { recursive: true })
    // The two stages are independent: compile and install side by side.
    await Promise.all([
      run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', join(app, 'dist')]),
      run('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: app, timeout: 120_000 }),
    ])
    await chmod(app, 0o755)
    for (const devOnly of ['typescript', 'tsx', 'drizzle-kit', 'tap']) {
      t.notOk(await stat(join(app, 'node_modules', devOnly)).then(() => true, () => false), `${devOnly} is not installed`)
    }

    const { url: databaseUrl, drop } = await createDatabase('bcw_image')
    t.teardown(drop)

    // setpriv execs the command as nobody (no fork: signals and exit codes are the command's own).
    // tap's process tracking rides on NODE_OPTIONS, which the image does not have: dropped.
    const nobody = ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'env', '-u', 'NODE_OPTIONS']
    const baseEnv = { PATH: process.env.PATH, ...imageEnv, DATABASE_URL: databaseUrl }
    const migrated = await run('setpriv', [...nobody, process.execPath, 'dist/migrate.js'], { cwd: app, env: baseEnv })
    t.match(migrated.stdout, /migrations applied/, 'node dist/migrate.js migrates a fresh database as nobody')
    // The npm script runs the same entry; it needs no dev dependency (and migrating again is a no-op).
    const npmHome = await mkdtemp(join(tmpdir(), 'bcw-npm-home-'))
    t.teardown(() => rm(npmHome, { recursive: true, force: true }))
    await run('chown', ['nobody:nogroup', npmHome])
    const viaNpm = await run('setpriv', [...nobody, 'npm', 'run', 'db:migrate'], { cwd: app, env: { ...baseEnv, HOME: npmHome } })
    t.match(viaNpm.stdout, /migrations applied/, 'npm run db:migrate works from the image')

    const tables = await adminQuery<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name", databaseUrl)
    t.same(tables.map((row) => row.table_name), ['book_jobs', 'books', 'chapters', 'users', 'webhook_dead_letters'])
    await adminQuery("INSERT INTO users (id) VALUES ('image-user')", databaseUrl)

    const server = await spawnServer(t, 'setpriv', [...nobody, process.execPath, 'dist/server.js'], {
      cwd: app,
      env: { ...baseEnv, WEBHOOK_SECRET: TEST_SECRET, HOST: '127.0.0.1', PORT: '0' },
    })
    const status = await readFile(`/proc/${server.child.pid}/status`, 'utf8')
    t.match(status, /^Uid:\s+65534\b/m, 'the server process runs as nobody (uid 65534), not root')

    const delivery = completedDelivery({ userId: 'image-user', chapters: 2 })
    const endpoint = `${server.url}${BOOK_COMPLETION_PATH}`
    t.equal((await deliver(endpoint, delivery)).status, 200, 'a signed delivery is accepted')
    t.equal((await deliver(endpoint, delivery, { 'content-type': 'application/json' })).status, 401, 'production env: an unsigned one is refused')
    const rows = await adminQuery('SELECT status FROM book_jobs WHERE id = $1', databaseUrl, [delivery.job_id])
    t.same(rows, [{ status: 'COMPLETED' }], 'and committed')

    const port = new URL(server.url).port
    const check = await run('setpriv', [...nobody, ...healthcheckCommand!], { env: { PATH: process.env.PATH, PORT: port } })
      .then(() => 0, (err: { code?: number }) => err.code ?? 1)
    t.equal(check, 0, 'the Dockerfile HEALTHCHECK command passes against the running server')

    server.child.kill('SIGTERM')
    t.equal(await server.exited, 0, 'SIGTERM: exit code 0')
    const stopped = await run('setpriv', [...nobody, ...healthcheckCommand!], { env: { PATH: process.env.PATH, PORT: port } })
      .then(() => 0, (err: { code?: number }) => err.code ?? 1)
    t.equal(stopped, 1, 'and the health check fails once it is gone')
    t.notOk(server.output().includes(TEST_SECRET.slice('whsec_'.length)), 'the secret is not in the output')
  })
}
