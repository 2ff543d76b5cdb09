import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { ConfigError, loadConfig } from '../src/config.ts'

const strongSecret = `whsec_${randomBytes(32).toString('base64')}`
const production = { DATABASE_URL: 'postgres://127.0.0.1/x', WEBHOOK_SECRET: strongSecret }

function refusal (env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env)
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  throw new Error('loadConfig accepted the environment')
}

t.test('defaults are the contract\'s', async (t) => {
  const config = loadConfig(production)
  t.match(config, {
    environment: 'production',
    port: 3001,
    host: '0.0.0.0',
    dataDir: './.data',
    toleranceSeconds: 300,
    bodyLimitBytes: 10 * 1024 * 1024,
    logLevel: 'info',
    defaultUserId: undefined,
  })
  t.equal(config.webhookKeys.length, 1)
  t.equal(config.webhookKeys[0]!.length, 32, 'a whsec_ secret is base64-decoded')
})

t.test('values are read and converted; empty variables count as unset', async (t) => {
  const config = loadConfig({ ...production, PORT: '8080', HOST: '127.0.0.1', WEBHOOK_TOLERANCE_SECONDS: '60', BODY_LIMIT_BYTES: '2048', DEFAULT_USER_ID: 'u1', LOG_LEVEL: 'warn', ENVIRONMENT: 'staging', DATA_DIR: '' })
  t.match(config, { port: 8080, host: '127.0.0.1', toleranceSeconds: 60, bodyLimitBytes: 2048, defaultUserId: 'u1', logLevel: 'warn', environment: 'staging', dataDir: './.data' })
})

t.test('outside development a missing or weak secret, or a missing DATABASE_URL, is refused', async (t) => {
  for (const environment of ['production', 'staging']) {
    t.equal(refusal({ ...production, ENVIRONMENT: environment, WEBHOOK_SECRET: undefined }).variable, 'WEBHOOK_SECRET')
    t.equal(refusal({ ...production, ENVIRONMENT: environment, WEBHOOK_SECRET: '   ' }).variable, 'WEBHOOK_SECRET')
    t.equal(refusal({ ...production, ENVIRONMENT: environment, DATABASE_URL: undefined }).variable, 'DATABASE_URL')
  }
  const weakPlain = refusal({ ...production, WEBHOOK_SECRET: 'x'.repeat(23) })
  t.equal(weakPlain.variable, 'WEBHOOK_SECRET')
  t.match(weakPlain.message, /weak/)
  t.equal(refusal({ ...production, WEBHOOK_SECRET: `whsec_${randomBytes(16).toString('base64')}` }).variable, 'WEBHOOK_SECRET', 'a 16-byte whsec_ key is weak')
  t.equal(refusal({ ...production, WEBHOOK_SECRET: `${strongSecret} short` }).variable, 'WEBHOOK_SECRET', 'one weak key among several')
  t.equal(refusal({ ...production, WEBHOOK_SECRET: 'whsec_not*base64!' }).variable, 'WEBHOOK_SECRET')
  t.equal(loadConfig({ ...production, WEBHOOK_SECRET: 'y'.repeat(24) }).webhookKeys[0]!.length, 24, '24 bytes is enough')
})

t.test('several whitespace-separated secrets are all keys (rotation)', async (t) => {
  const other = 'a-plain-text-secret-that-is-long-enough'
  const config = loadConfig({ ...production, WEBHOOK_SECRET: ` ${strongSecret}\n  ${other} ` })
  t.equal(config.webhookKeys.length, 2)
  t.same(config.webhookKeys[1], Buffer.from(other, 'utf8'), 'a plain secret is its UTF-8 bytes')
})

t.test('invalid values name the variable', async (t) => {
  t.equal(refusal({ ...production, PORT: 'abc' }).variable, 'PORT')
  t.equal(refusal({ ...production, PORT: '70000' }).variable, 'PORT')
  t.equal(refusal({ ...production, ENVIRONMENT: 'prod' }).variable, 'ENVIRONMENT')
  t.equal(refusal({ ...production, LOG_LEVEL: 'loud' }).variable, 'LOG_LEVEL')
  t.equal(refusal({ ...production, WEBHOOK_TOLERANCE_SECONDS: '0' }).variable, 'WEBHOOK_TOLERANCE_SECONDS')
})

t.test('load shedding: MAX_INFLIGHT_BODY_BYTES (32 MiB) never below BODY_LIMIT_BYTES; the pressure limits', async (t) => {
  t.match(loadConfig(production).loadShedding, { maxInflightBodyBytes: 32 * 1024 * 1024, maxEventLoopDelayMs: 150, maxRssBytes: 1024 * 1024 * 1024, maxHeapUsedBytes: 512 * 1024 * 1024 })
  t.equal(loadConfig({ ...production, MAX_INFLIGHT_BODY_BYTES: '104857600' }).loadShedding.maxInflightBodyBytes, 100 * 1024 * 1024)
  const below = refusal({ ...production, MAX_INFLIGHT_BODY_BYTES: String(1024 * 1024) })
  t.equal(below.variable, 'MAX_INFLIGHT_BODY_BYTES')
  t.match(below.message, /at least BODY_LIMIT_BYTES \(10485760\)/)
  t.equal(loadConfig({ ...production, BODY_LIMIT_BYTES: '2048', MAX_INFLIGHT_BODY_BYTES: '4096' }).loadShedding.maxInflightBodyBytes, 4096)

  // A smaller V8 heap lowers the heap limit to 80 % of the old space, which is where the heap runs
  // out on every Node line (V8's heap_size_limit adds a young generation of 48 MiB on Node 20, 192 on 24).
  const limitsIn = (args: string[], env: NodeJS.ProcessEnv = {}) => new Promise<{ maxHeapUsedBytes: number, heapSizeLimit: number }>((resolve, reject) => {
    const child = spawn(process.execPath, [...args, '--import', 'tsx', '-e',
      "import('./src/config.ts').then(async (m) => console.log(JSON.stringify({ ...m.pressureLimits(), heapSizeLimit: (await import('node:v8')).getHeapStatistics().heap_size_limit })))"],
    { env: { PATH: process.env.PATH, ...env } })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { out += chunk })
    child.on('error', reject)
    child.on('exit', () => resolve(JSON.parse(out)))
  })
  const MiB = 1024 * 1024
  for (const [how, limits] of [
    ['--max-old-space-size=256', await limitsIn(['--max-old-space-size=256'])],
    ['NODE_OPTIONS=--max-old-space-size=256', await limitsIn([], { NODE_OPTIONS: '--max-old-space-size=256' })],
  ] as const) {
    t.equal(limits.maxHeapUsedBytes, Math.floor(0.8 * 256 * MiB),
      `${how}: the heap limit is 80 % of the old space (${Math.round(limits.maxHeapUsedBytes / MiB)} MiB; V8's heap_size_limit ${Math.round(limits.heapSizeLimit / MiB)} MiB on ${process.version})`)
    t.ok(limits.maxHeapUsedBytes < 0.8 * limits.heapSizeLimit, 'below 80 % of heap_size_limit (young generation included)')
  }
  const defaults = await limitsIn([])
  t.equal(defaults.maxHeapUsedBytes, Math.floor(Math.min(512 * MiB, 0.8 * defaults.heapSizeLimit)), 'without the flag: 80 % of V8\'s own limit, at most 512 MiB')
})

t.test('development needs neither a secret nor a database', async (t) => {
  const config = loadConfig({ ENVIRONMENT: 'development' })
  t.equal(config.webhookKeys.length, 0)
  t.equal(config.databaseUrl, undefined)
})

/** Runs the real process entry and returns its exit code and stderr. */
function startServer (env: NodeJS.ProcessEnv): Promise<{ code: number | null, stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      env: { PATH: process.env.PATH, PORT: '0', HOST: '127.0.0.1', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let stderr = ''
    child.stderr.on('data', (chunk) => { stderr += chunk })
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stderr }) })
  })
}

t.test('the server process refuses to start with one clear line and a non-zero exit', async (t) => {
  const cases: Array<[string, NodeJS.ProcessEnv, string]> = [
    ['missing secret', { DATABASE_URL: production.DATABASE_URL }, 'WEBHOOK_SECRET'],
    ['weak secret', { ...production, WEBHOOK_SECRET: 'short-secret' }, 'WEBHOOK_SECRET'],
    ['missing DATABASE_URL', { WEBHOOK_SECRET: strongSecret, ENVIRONMENT: 'staging' }, 'DATABASE_URL'],
  ]
  await Promise.all(cases.map(async ([name, env, variable]) => {
    const { code, stderr } = await startServer(env)
    t.not(code, 0, `${name}: non-zero exit`)
    const lines = stderr.trim().split('\n')
    t.equal(lines.length, 1, `${name}: one line`)
    t.match(lines[0], new RegExp(`^configuration error: ${variable}`), `${name}: names ${variable}`)
    t.notMatch(stderr, strongSecret.slice(6), 'the secret is not printed')
  }))
})
