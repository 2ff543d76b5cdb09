import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { parse } from 'yaml'
import { EnvSchema } from '../src/config.ts'

const root = new URL('..', import.meta.url).pathname

/** The COPY instructions of the Dockerfile (continuations joined), to check their sources. */
function copySources (text: string): string[] {
  return text.replace(/\\\r?\n/g, ' ').split(/\r?\n/).map((line) => line.trim())
    .filter((line) => /^COPY\s/i.test(line) && !/--from=/.test(line))
    .flatMap((line) => line.split(/\s+/).slice(1).filter((part) => !part.startsWith('--')).slice(0, -1))
}

/**
 * What the built image (test/image.test.ts) and the running stack (test/compose.test.ts) do not
 * show by themselves: what stays out of the build context, and that compose passes every variable
 * the service reads.
 */

t.test('.dockerignore keeps node_modules, .data, tests and git out; every COPY source exists', async (t) => {
  const ignored = (await readFile(join(root, '.dockerignore'), 'utf8')).split('\n').map((line) => line.trim())
  for (const entry of ['node_modules', '.data', 'test', '.git', '.env', 'dist']) t.ok(ignored.includes(entry), `${entry} is ignored`)
  const sources = copySources(await readFile(join(root, 'Dockerfile'), 'utf8'))
  t.ok(sources.length >= 4, `the COPY sources: ${sources.join(' ')}`)
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
  // eslint-disable-next-line no-template-curly-in-string -- compose's own substitution
  t.same(webhook.ports, ['${WEBHOOK_PUBLISH:-3001}:3001'], 'published on port 3001 (WEBHOOK_PUBLISH: another host port or address)')
  t.equal(webhook.command, undefined, 'webhook runs the image CMD')
  t.equal(webhook.image, migrate.image, 'migrate and webhook run the same image')
  t.ok(webhook.build, 'built from the Dockerfile')
  // One health check, the image's (test/image.test.ts, test/compose.test.ts run it): a copy here
  // drifted once, and podman 4.3's Docker API split its exec-form test at the spaces (never healthy).
  t.equal(webhook.healthcheck, undefined, 'webhook uses the image\'s HEALTHCHECK')
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
