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
import { runProcess, spawnServer } from './support/process.ts'
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
const entrypoint = execForm(runtime.filter((instruction) => instruction.keyword === 'ENTRYPOINT').at(-1)?.args ?? '')
/** The runtime stage's ENV, as `docker run` would start the process with. */
const imageEnv = Object.fromEntries(runtime.filter((instruction) => instruction.keyword === 'ENV')
  .flatMap((instruction) => [...instruction.args.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!])))

t.test('Dockerfile: multi-stage on a supported Node line, production dependencies only, non-root, health check, an init as PID 1', async (t) => {
  const stages = dockerfile.filter((instruction) => instruction.keyword === 'FROM').map((instruction) => instruction.args)
  t.ok(stages.length >= 2, `multi-stage (${stages.join(' | ')})`)
  // Node 20 reached its end of life on 2026-04-30; 24 is the Active LTS line (until 2028-04-30).
  t.ok(stages.every((from) => /^node:24(\.[\d.]+)?-(bookworm-)?slim\b/.test(from)), 'every stage is an official Node 24 slim image')
  t.notOk(stages.some((from) => /^node:(1\d|20|21|23)\b/.test(from)), 'no end-of-life or odd (short-lived) Node line')
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
  t.same(execForm(cmd?.args ?? ''), ['node', 'dist/server.js'], 'CMD ["node", "dist/server.js"] in exec form: no npm or shell between the init and node')
  t.same(entrypoint, ['/usr/bin/tini', '--'], 'ENTRYPOINT ["/usr/bin/tini", "--"]: tini is PID 1, forwards signals and reaps zombies')
  t.ok(runs.some((args) => /apt-get install\b.*\btini\b/.test(args) && /rm -rf \/var\/lib\/apt\/lists/.test(args)), 'tini is installed in the runtime stage (apt lists removed)')
  t.ok(keywords.indexOf('ENTRYPOINT') > keywords.lastIndexOf('RUN'), 'after the last RUN')
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
  t.notOk(webhook.init ?? migrate.init, 'no `init: true`: the image brings its own init (a second one would warn)')
  for (const service of [migrate, webhook]) {
    t.match(service.environment.DATABASE_URL, /^postgres:\/\/.*@postgres:5432\//, 'DATABASE_URL points at the postgres service')
  }
  t.match(webhook.environment.WEBHOOK_SECRET, /^\$\{WEBHOOK_SECRET:\?/, 'start-up refuses to go on without WEBHOOK_SECRET')
})

t.test('docker-compose.yml passes every variable of the config schema to the service, with its defaults', async (t) => {
  const compose = parse(await readFile(join(root, 'docker-compose.yml'), 'utf8'), { merge: true })
  const environment = compose.services.webhook.environment as Record<string, string>
  // Set by compose itself, not passed from the operator's environment: the port mapping and the
  // health check need PORT and HOST fixed; DATABASE_URL points at the postgres service.
  const fixedByCompose: Record<string, string> = { PORT: '3001', HOST: '0.0.0.0' }
  for (const [variable, schema] of Object.entries(EnvSchema.properties)) {
    const value = environment[variable]
    t.ok(value !== undefined, `${variable} is passed to the service`)
    if (value === undefined || variable === 'DATABASE_URL') continue
    if (variable in fixedByCompose) {
      t.equal(String(value), fixedByCompose[variable])
      t.equal(String(value), String((schema as { default?: unknown }).default), `${variable} is fixed at the service's own default`)
      continue
    }
    const passed = /^\$\{(\w+)(:-|:\?)(.*)\}$/.exec(String(value))
    t.ok(passed, `${variable}: \${${variable}:-default} or \${${variable}:?message}`)
    if (!passed) continue
    t.equal(passed[1], variable, `${variable} comes from the variable of the same name`)
    if (passed[2] === ':-') {
      const schemaDefault = (schema as { default?: unknown }).default
      t.equal(passed[3], schemaDefault === undefined ? '' : String(schemaDefault), `${variable} defaults to the service's own default`)
    }
  }
  t.match(environment.DATABASE_URL, /^postgres:\/\/\$\{POSTGRES_USER:-webhook\}:\$\{POSTGRES_PASSWORD\}@postgres:5432\/\$\{POSTGRES_DB:-books\}$/)
  const example = await readFile(join(root, '.env.example'), 'utf8')
  // Listed, commented out: a copy of .env.example sets nothing, so it is safe for development.
  for (const variable of Object.keys(EnvSchema.properties)) t.match(example, new RegExp(`^# ${variable}=`, 'm'), `.env.example lists ${variable}`)
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

    // As the image starts it: ENTRYPOINT (tini) then CMD, with node being the one from PATH. Not PID 1
    // here, so tini registers as a subreaper instead (TINI_SUBREAPER) — it forwards signals alike.
    const hasInit = await stat(entrypoint![0]!).then(() => true, () => false)
    if (!hasInit) t.comment(`${entrypoint![0]} is not installed here (apt-get install tini): the server runs without it`)
    const server = await spawnServer(t, 'setpriv', [...nobody, ...(hasInit ? entrypoint! : []), process.execPath, 'dist/server.js'], {
      cwd: app,
      env: { ...baseEnv, WEBHOOK_SECRET: TEST_SECRET, HOST: '127.0.0.1', PORT: '0', ...(hasInit ? { TINI_SUBREAPER: '1' } : {}) },
    })
    const status = await readFile(`/proc/${server.child.pid}/status`, 'utf8')
    t.match(status, /^Uid:\s+65534\b/m, 'the server process runs as nobody (uid 65534), not root')

    const delivery = completedDelivery({ userId: 'image-user', chapters: 2 })
    const endpoint = `${server.url}${BOOK_COMPLETION_PATH}`
    t.equal((await deliver(endpoint, delivery)).status, 200, 'a signed delivery is accepted')
    t.equal((await deliver(endpoint, delivery, { 'content-type': 'application/json' })).status, 401, 'production env: an unsigned one is refused')
    const rows = await adminQuery('SELECT status FROM book_jobs WHERE id = $1', databaseUrl, [delivery.job_id])
    t.same(rows, [{ status: 'COMPLETED' }], 'and committed')

    // The operator commands, from the image with production dependencies only, as nobody.
    const refused = await deliver(endpoint, completedDelivery({ userId: 'not-in-users', chapters: 1 }))
    t.equal(refused.status, 422, 'a delivery for an unknown user is a dead letter')
    const npmRun = (args: string[]) => runProcess('setpriv', [...nobody, 'npm', 'run', '--silent', ...args], { cwd: app, env: { ...baseEnv, HOME: npmHome } })
    const [letters, shown, unknown] = await Promise.all([
      npmRun(['dead-letters', '--', 'list', '--json']),
      npmRun(['deliveries', '--', 'show', delivery.job_id]),
      npmRun(['deliveries', '--', 'show', 'no-such-job']),
    ])
    t.equal(letters.code, 0, `npm run dead-letters -- list --json: ${letters.stderr}`)
    t.match(JSON.parse(letters.stdout), [{ reason: 'user "not-in-users" does not exist', replayedAt: null }], 'lists the dead letter as JSON')
    t.equal(shown.code, 0, `npm run deliveries -- show: ${shown.stderr}`)
    t.match(shown.stdout, new RegExp(`^job +${delivery.job_id}\n[^]*^status +COMPLETED$[^]*^ {2}chapters +2 stored`, 'm'), 'shows the job and its book')
    t.equal(unknown.code, 1, 'and exit 1 for a job it knows nothing of')
    t.match(unknown.stderr, /nothing is known of job "no-such-job"/)

    const port = new URL(server.url).port
    const check = await runProcess('setpriv', [...nobody, ...healthcheckCommand!], { env: { PATH: process.env.PATH, PORT: port } })
    t.equal(check.code, 0, 'the Dockerfile HEALTHCHECK command passes against the running server')

    server.child.kill('SIGTERM')
    t.equal(await server.exited, 0, 'SIGTERM: exit code 0')
    const stopped = await runProcess('setpriv', [...nobody, ...healthcheckCommand!], { env: { PATH: process.env.PATH, PORT: port } })
    t.equal(stopped.code, 1, 'and the health check fails once it is gone')
    t.notOk(server.output().includes(TEST_SECRET.slice('whsec_'.length)), 'the secret is not in the output')
  })
}
