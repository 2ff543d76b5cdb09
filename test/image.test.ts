import { mkdtemp, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { completedDelivery } from '../scripts/deliveries.ts'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { requiresPostgres, TEST_SECRET } from './helper.ts'
import { ROOT } from './support/compiled.ts'
import { buildImage, freePort, IMAGE, plainEnv, publishedPorts, requiresEngine, startContainer, timedSteps, type ContainerEngine } from './support/container-engine.ts'
import { runProcess } from './support/process.ts'
import { adminQuery, createDatabase, POSTGRES_SOCKET_DIR, unixSocketUrl } from './support/postgres.ts'

/**
 * The image operators run, built from the committed Dockerfile (npm run image:build) and run with
 * the engine: what is inside, how it starts and stops, and that it serves and migrates. The
 * one-shot containers use the host's network to reach its Postgres (127.0.0.1 only); the served
 * one publishes its port on 127.0.0.1 and reaches Postgres through the mounted Unix socket.
 */

// A cold build (stand-in bases included) takes minutes; tap's 120 s is for ordinary files.
t.setTimeout(20 * 60_000)

const MAX_NODE_MODULES_MB = 64
/** The stand-in base is ~250 MB (Debian minbase + Node); the official slim one is smaller. */
const MAX_IMAGE_MB = 360
const KIT = join(ROOT, 'clients/python/book_completion_webhook.py')
const SENDERS = 4

/** One line per delivery: {"job", "status": 200} or {"job", "spooled": last error}; stops at the first other than a 503 (the service is gone). */
const SENDER = `
import json, sys
sys.path.insert(0, "clients/python")
import book_completion_webhook as kit
options = json.loads(sys.argv[1])
for line in sys.stdin:
    payload = json.loads(line)
    try:
        kit.send(payload, url=options["url"], secret=options["secret"], max_attempts=1, timeout=20, spool_dir=options["spool"])
        print(json.dumps({"job": payload["job_id"], "status": 200}), flush=True)
    except kit.WebhookSpooled as err:
        print(json.dumps({"job": payload["job_id"], "spooled": err.last_error}), flush=True)
        if "503" not in err.last_error:
            break
sys.stdin.read()
`

async function du (engine: ContainerEngine, path: string): Promise<number> {
  const run = await engine.run(['run', '--rm', '--entrypoint', 'du', IMAGE, '-sm', path])
  return Number(run.stdout.split(/\s/)[0])
}

t.test('npm run image:build: --help; without an engine, one line and exit 1', async (t) => {
  const help = await runProcess('bash', [join(ROOT, 'scripts/image-build.sh'), '--help'], { env: plainEnv() })
  t.equal(help.code, 0)
  t.match(help.stdout, /^usage: npm run image:build/)
  // A PATH with neither podman nor docker (only what the script needs before it looks for them).
  const bare = await mkdtemp(join(tmpdir(), 'bcw-no-engine-'))
  t.teardown(() => rm(bare, { recursive: true, force: true }))
  await symlink('/usr/bin/dirname', join(bare, 'dirname'))
  const none = await runProcess('/bin/bash', [join(ROOT, 'scripts/image-build.sh')], { env: { PATH: bare } })
  t.equal(none.code, 1, 'exit 1')
  t.equal(none.stdout, '')
  t.match(none.stderr, /^image:build: no container engine here: install podman .*\n$/, 'one line that says what to install')
  t.equal(none.stderr.split('\n').length, 2, 'and only that line')
})

const engine = await requiresEngine(t, 'the image: built from the Dockerfile and run')
if (engine && await requiresPostgres(t, 'the image against the host\'s Postgres')) {
  const build = await buildImage()
  t.comment(`npm run image:build: ${(build.ms / 1000).toFixed(1)} s (${timedSteps(build.output).join('; ')})`)

  t.test('what is in the image: Docker format with its health check, production files only, small', async (t) => {
    const sizeMb = Number((await engine.run(['image', 'inspect', '--format', '{{.Size}}', IMAGE])).stdout) / 1e6
    const nodeModulesMb = await du(engine, '/app/node_modules')
    t.comment(`runtime image ${sizeMb.toFixed(0)} MB, production node_modules ${nodeModulesMb} MB`)
    t.ok(sizeMb > 50 && sizeMb <= MAX_IMAGE_MB, `the image is ${sizeMb.toFixed(0)} MB (<= ${MAX_IMAGE_MB})`)
    t.ok(nodeModulesMb > 5 && nodeModulesMb <= MAX_NODE_MODULES_MB, `production node_modules is ${nodeModulesMb} MB (<= ${MAX_NODE_MODULES_MB})`)

    const health = JSON.parse((await engine.run(['image', 'inspect', '--format', '{{json .HealthCheck}}', IMAGE])).stdout || 'null') ??
      JSON.parse((await engine.run(['image', 'inspect', '--format', '{{json .Config.Healthcheck}}', IMAGE])).stdout || 'null')
    t.match(health?.Test?.join(' '), /node -e .*\/health/, 'the HEALTHCHECK is in the image (Docker format)')

    const config = JSON.parse((await engine.run(['image', 'inspect', '--format', '{{json .Config}}', IMAGE])).stdout) as { User: string, Env: string[], Entrypoint: string[], Cmd: string[], ExposedPorts: Record<string, unknown> }
    t.match(config, { User: 'node', Entrypoint: ['/usr/bin/tini', '--'], Cmd: ['node', 'dist/server.js'] }, 'runs node dist/server.js under tini as node')
    t.ok(config.Env.includes('ENVIRONMENT=production') && config.Env.includes('NODE_ENV=production'), 'production by default')
    t.ok('3001/tcp' in config.ExposedPorts, 'exposes 3001')
    // Node 20 reached its end of life on 2026-04-30; 24 is the Active LTS line (until 2028-04-30).
    const version = await engine.run(['run', '--rm', IMAGE, 'node', '--version'])
    t.match(version.stdout.trim(), /^v24\./, `on Node 24 (${version.stdout.trim()})`)

    const listing = await engine.run(['run', '--rm', '--entrypoint', 'sh', IMAGE, '-c',
      'ls /app; echo --; ls /app/node_modules /app/node_modules/.bin 2>/dev/null; echo --; ls /var/cache/apt/archives /var/lib/apt/lists'])
    const [app = '', modules = '', apt = ''] = listing.stdout.split('--\n')
    t.same(app.trim().split('\n').sort(), ['dist', 'migrations', 'node_modules', 'package-lock.json', 'package.json'], '/app: the compiled code, migrations and production dependencies')
    for (const devOnly of ['typescript', 'tap', 'tsx', 'drizzle-kit', '@electric-sql', 'eslint']) {
      t.notOk(modules.split('\n').includes(devOnly), `no ${devOnly} in node_modules`)
    }
    t.ok(modules.split('\n').includes('fastify'), 'the runtime dependencies are')
    t.notMatch(apt, /\.deb\b|_Packages/, 'no apt package cache or lists')
  })

  const { url: databaseUrl, drop } = await createDatabase('bcw_image')
  t.teardown(drop)

  t.test('node dist/migrate.js from the image, twice at once, on a fresh database: both exit 0, each migration once', async (t) => {
    const migrate = () => engine.run(['run', '--rm', '--network', 'host', '-e', `DATABASE_URL=${databaseUrl}`, IMAGE, 'node', 'dist/migrate.js'])
    const runs = await Promise.all([migrate(), migrate()])
    for (const run of runs) {
      t.equal(run.code, 0, `exit 0: ${run.stderr.trim()}`)
      t.match(run.stdout, /migrations applied/)
    }
    const [applied] = await adminQuery<{ n: number }>('SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations', databaseUrl)
    const [distinct] = await adminQuery<{ n: number }>('SELECT count(DISTINCT hash)::int AS n FROM drizzle.__drizzle_migrations', databaseUrl)
    t.ok(applied!.n > 0, `${applied!.n} migrations recorded`)
    t.equal(applied!.n, distinct!.n, 'each applied once')
  })

  t.test('production without WEBHOOK_SECRET: a non-zero exit and the clear start-up message', async (t) => {
    const run = await engine.run(['run', '--rm', '--network', 'host', '-e', `DATABASE_URL=${databaseUrl}`, IMAGE])
    t.not(run.code, 0, `exit ${run.code}`)
    t.match(run.stdout + run.stderr, /^configuration error: WEBHOOK_SECRET: is required when ENVIRONMENT=production$/m)
  })

  t.test('read-only, no capabilities: uid 1000 under tini, healthy, serves the kit, the operator commands answer, SIGTERM under load', async (t) => {
    await adminQuery("INSERT INTO users (id) VALUES ('image-user') ON CONFLICT DO NOTHING", databaseUrl)
    const port = await freePort()
    // As operators run it: the container on its own network, its port published on 127.0.0.1; the
    // host's Postgres through its Unix socket, mounted. Where there is no local socket, the host's network.
    const socketUrl = unixSocketUrl(databaseUrl)
    const network = socketUrl
      ? ['-p', `127.0.0.1:${port}:3001`, '-v', `${POSTGRES_SOCKET_DIR}:${POSTGRES_SOCKET_DIR}:ro`, '-e', `DATABASE_URL=${socketUrl}`]
      : ['--network', 'host', '-e', `DATABASE_URL=${databaseUrl}`, '-e', 'HOST=127.0.0.1', '-e', `PORT=${port}`]
    t.comment(socketUrl ? `published on 127.0.0.1:${port}; Postgres through ${POSTGRES_SOCKET_DIR}` : `the host's network, port ${port} (no Postgres socket in ${POSTGRES_SOCKET_DIR} to mount)`)
    const startedAt = Date.now()
    const container = await startContainer(t, engine, {
      args: [...network, '--read-only', '--tmpfs', '/tmp', '--cap-drop=ALL', '--stop-timeout', '15', '-e', `WEBHOOK_SECRET=${TEST_SECRET}`],
    })
    const healthyMs = await container.waitHealthy(30_000)
    t.ok(healthyMs !== undefined, `healthy ${Date.now() - startedAt} ms after ${engine.name} run`)
    t.comment(`start to healthy: ${Date.now() - startedAt} ms`)
    t.equal(await container.inspect('{{.HostConfig.ReadonlyRootfs}}'), 'true', 'the root filesystem is read-only')
    if (socketUrl) {
      const ports = await publishedPorts(engine, container.name)
      t.same(ports['3001/tcp'], [{ HostIp: '127.0.0.1', HostPort: String(port) }], `3001 published on 127.0.0.1:${port} only`)
    }

    // eslint-disable-next-line no-template-curly-in-string -- a shell parameter expansion
    const processes = await container.exec(['sh', '-c', 'for p in /proc/[0-9]*; do echo "${p#/proc/} $(sed -n "s/^PPid:\\t//p; s/^Uid:\\t\\([0-9]*\\).*/uid=\\1/p" $p/status | tr "\\n" " ")$(tr "\\0" " " <$p/cmdline)"; done'])
    // "PID PPID uid=UID command line…" per process.
    const table = processes.stdout.trim().split('\n').map((line) => line.trim().split(/\s+/))
    t.match(table.find(([pid]) => pid === '1')?.slice(3).join(' '), /^\/usr\/bin\/tini -- node dist\/server\.js$/, 'tini is PID 1')
    const node = table.find((row) => row.slice(3).join(' ') === 'node dist/server.js')
    t.equal(node?.[1], '1', `node (PID ${node?.[0]}) is its child`)
    t.equal(node?.[2], 'uid=1000', 'node runs as uid 1000')
    t.equal((await container.exec(['id', '-u'])).stdout.trim(), '1000', 'the image user is uid 1000')
    const write = await container.exec(['sh', '-c', 'touch /app/x || touch /home/node/x; echo ok > /tmp/x && cat /tmp/x'])
    t.match(write.stderr, /Read-only file system/, 'nothing outside /tmp can be written')
    t.equal(write.stdout.trim(), 'ok', '/tmp (tmpfs) can')

    // The Python kit, on the host, signs and sends a book to the published port.
    const endpoint = `http://127.0.0.1:${port}${BOOK_COMPLETION_PATH}`
    const delivery = completedDelivery({ userId: 'image-user', chapters: 3 })
    const spool = await mkdtemp(join(tmpdir(), 'bcw-image-spool-'))
    t.teardown(() => rm(spool, { recursive: true, force: true }))
    const kitEnv = plainEnv({ WEBHOOK_URL: endpoint, WEBHOOK_SECRET: TEST_SECRET, WEBHOOK_SPOOL_DIR: spool, PYTHONDONTWRITEBYTECODE: '1' })
    const sent = await runProcess('python3', [KIT, 'send', '-'], { env: kitEnv, stdin: JSON.stringify(delivery) })
    t.equal(sent.code, 0, `the kit delivered it: ${sent.stderr.trim()}`)
    t.match(sent.stderr, /: 200\b.*; delivered/, '200')
    t.same(await adminQuery('SELECT status FROM book_jobs WHERE id = $1', databaseUrl, [delivery.job_id]), [{ status: 'COMPLETED' }], 'and stored')

    // The operator commands inside the container (production dependencies only, read-only root).
    const shown = await container.exec(['npm', 'run', '--silent', 'deliveries', '--', 'show', delivery.job_id], { env: { npm_config_cache: '/tmp/.npm' } })
    t.equal(shown.code, 0, `npm run deliveries -- show: ${shown.stderr.trim()}`)
    t.match(shown.stdout, new RegExp(`^job +${delivery.job_id}\n[^]*^status +COMPLETED$[^]*^ {2}chapters +3 stored`, 'm'), 'shows the job and its book')
    const letters = await container.exec(['npm', 'run', '--silent', 'dead-letters', '--', 'list', '--json'], { env: { npm_config_cache: '/tmp/.npm' } })
    t.equal(letters.code, 0, `npm run dead-letters -- list --json: ${letters.stderr.trim()}`)
    t.same(JSON.parse(letters.stdout), [], 'answers: no dead letters')
    t.ok(await container.healthy(), 'the health check still passes')

    // SIGTERM (engine stop) while 4 kit senders deliver.
    const payloads = Array.from({ length: SENDERS }, () => Array.from({ length: 400 }, () => completedDelivery({ userId: 'image-user', chapters: 2 })))
    const senders = payloads.map((list) => runProcess('python3', ['-c', SENDER, JSON.stringify({ url: endpoint, secret: TEST_SECRET, spool })], {
      cwd: ROOT, env: plainEnv({ PYTHONDONTWRITEBYTECODE: '1' }), stdin: list.map((p) => JSON.stringify(p)).join('\n') + '\n', timeoutMs: 120_000,
    }))
    for (let i = 0; i < 200; i++) {
      const [row] = await adminQuery<{ n: number }>('SELECT count(*)::int AS n FROM book_jobs', databaseUrl)
      if (row!.n >= 40) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const stopAt = Date.now()
    const stop = await container.stop(15)
    const stopMs = Date.now() - stopAt
    t.equal(stop.code, 0, `${engine.name} stop: ${stop.stderr.trim()}`)
    t.equal(await container.exitCode(), 0, 'the service exited 0')
    t.ok(stopMs < 15_000, `within the 15 s grace (${stopMs} ms), before any SIGKILL`)

    const outcomes = (await Promise.all(senders)).flatMap((run) => run.stdout.trim().split('\n').filter(Boolean)
      .map((line) => JSON.parse(line) as { job: string, status?: number, spooled?: string }))
    const acknowledged = outcomes.filter((outcome) => outcome.status === 200).map((outcome) => outcome.job)
    const refused = outcomes.filter((outcome) => outcome.spooled !== undefined)
    const stored = await adminQuery<{ id: string }>("SELECT id FROM book_jobs WHERE id = ANY($1) AND status = 'COMPLETED'", databaseUrl, [acknowledged])
    t.comment(`stop under load: ${stopMs} ms; ${outcomes.length} sent, ${acknowledged.length} answered 200, ${stored.length} of them stored, ${refused.length} refused (spooled by the kit)`)
    t.ok(acknowledged.length >= 40, `${acknowledged.length} deliveries answered 200`)
    t.equal(stored.length, acknowledged.length, 'every delivery answered 200 is stored')
    for (const outcome of refused) {
      t.match(outcome.spooled, /503|refused|reset|closed|Broken pipe|Remote end|timed out/i, `refused as the kit retries: ${outcome.spooled}`)
    }
    t.notOk((await container.logs()).includes(TEST_SECRET.slice('whsec_'.length)), 'the secret is not in the logs')
  })
}
