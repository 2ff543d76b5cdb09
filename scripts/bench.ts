/**
 * `npm run bench`: drives the built service (production mode, signed requests) on loopback with
 * autocannon, reads CPU per delivery from /proc, and runs pgbench with the same writes as the floor.
 * See docs/PERFORMANCE.md for the method and `npm run bench -- --help` for the options.
 */
import { execFileSync } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import pg from 'pg'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { sign } from '../src/webhooks/signature.ts'
import { deliveryBody, makeBook, SIZES, type BenchBook, type SizeName } from './bench/book.ts'
import { createBenchDatabase } from './bench/database.ts'
import { runFloor, type FloorResult } from './bench/floor.ts'
import { startPgbouncer, type RunningPgbouncer } from './bench/pgbouncer.ts'
import { DatabaseBackendsCpu, peakRssMb, postgresServerCpuMs, processCpuMs } from './bench/proc.ts'
import { topSelfTime } from './bench/profile.ts'
import { startService, type RunningService } from './bench/service.ts'

const HELP = `npm run bench -- [options]
  --mode create|redeliver|retry
                            create: a new job per request (default); redeliver: one job over and
                            over, each with a new webhook-id (the full write path, serialised on
                            the job's row lock); retry: one job, one webhook-id (a sender's retries)
  --size 10k|94k|1m|10m     book preset: 1, 10, 100, 100 chapters (default 94k)
  --chapters N              override the preset's chapter count
  --ascii                   send the body as Python's json.dumps writes it by default
                            (ensure_ascii=True: every non-ASCII character as a \\u escape)
  --connections N           concurrent HTTP connections (default 10)
  --duration S              measured seconds (default 10), after --warmup S (default 3)
  --replicas N              service processes behind the same database (default 1)
  --pgbouncer               connect the service through PgBouncer (transaction pooling)
  --socket DIR              connect the service to Postgres over its Unix socket in DIR
                            (e.g. /var/run/postgresql) instead of TCP loopback
  --skip-floor              do not run pgbench (the floor runs by default)
  --floor-protocol P[,P]    pgbench -M for the floor(s), first one primary (default prepared,simple):
                            prepared = the texts are in the server already (the strict floor);
                            simple/extended = the texts travel with every transaction, as a delivery's do
  --profile                 run the service with node --cpu-prof and print its top self time
  --profile-dir DIR         keep the .cpuprofile files there (default: a temporary directory)
  --dev-start               also time a development start on a fresh embedded database
  --skip-build              use dist/ as it is
  --env K=V                 extra environment for the service (repeatable)`

const { values: args } = parseArgs({
  options: {
    mode: { type: 'string', default: 'create' },
    size: { type: 'string', default: '94k' },
    chapters: { type: 'string' },
    ascii: { type: 'boolean', default: false },
    connections: { type: 'string', default: '10' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    replicas: { type: 'string', default: '1' },
    pgbouncer: { type: 'boolean', default: false },
    socket: { type: 'string' },
    'skip-floor': { type: 'boolean', default: false },
    'floor-protocol': { type: 'string', default: 'prepared,simple' },
    profile: { type: 'boolean', default: false },
    'profile-dir': { type: 'string' },
    'dev-start': { type: 'boolean', default: false },
    'skip-build': { type: 'boolean', default: false },
    env: { type: 'string', multiple: true, default: [] },
    help: { type: 'boolean', default: false },
  },
})

if (args.help) {
  process.stdout.write(`${HELP}\n`)
  process.exit(0)
}

const mode = args.mode as 'create' | 'redeliver' | 'retry'
if (!['create', 'redeliver', 'retry'].includes(mode)) throw new Error('--mode is create, redeliver or retry')
if (!(args.size in SIZES)) throw new Error(`--size is one of ${Object.keys(SIZES).join(', ')}`)
const size = SIZES[args.size as SizeName]
const chapterCount = Number(args.chapters ?? size.chapters)
const connections = Number(args.connections)
const durationSeconds = Number(args.duration)
const warmupSeconds = Number(args.warmup)
const replicaCount = Number(args.replicas)
const floorProtocols = args['floor-protocol'].split(',') as Array<'prepared' | 'extended' | 'simple'>
if (floorProtocols.some((protocol) => !['prepared', 'extended', 'simple'].includes(protocol))) {
  throw new Error('--floor-protocol takes prepared, extended and/or simple')
}
const serviceEnv = Object.fromEntries(args.env.map((pair) => {
  const at = pair.indexOf('=')
  return [pair.slice(0, at), pair.slice(at + 1)]
}))

/** Pre-signed deliveries are kept in memory; beyond this budget the run stops early instead. */
const PRESIGN_BUDGET_BYTES = 1_500_000_000
const PROJECT_DIR = new URL('..', import.meta.url).pathname
const secret = `whsec_${randomBytes(32).toString('base64')}`
const key = Buffer.from(secret.slice('whsec_'.length), 'base64')

interface Signed { body: Buffer, headers: Record<string, string> }

/** Splices job ids into one serialised body instead of re-serialising the book per request. */
function bodyFactory (book: BenchBook): (jobId: string) => Buffer {
  const marker = `__job_${randomUUID()}__`
  const body = deliveryBody(book, marker)
  const [before, after] = (args.ascii ? escapeNonAscii(body) : body).split(marker) as [string, string]
  const head = Buffer.from(before)
  const tail = Buffer.from(after)
  return (jobId) => Buffer.concat([head, Buffer.from(jobId), tail])
}

/** What Python's `json.dumps(..., ensure_ascii=True)` sends: UTF-16 units above U+007F as `\\uXXXX`. */
function escapeNonAscii (json: string): string {
  return json.replace(/[\u0080-\uffff]/g, (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

function presign (count: number, makeBody: (jobId: string) => Buffer, redeliverJobId: string): Signed[] {
  const timestamp = Math.floor(Date.now() / 1000)
  const signed: Signed[] = []
  const retryBody = makeBody(redeliverJobId)
  for (let i = 0; i < count; i++) {
    const body = mode === 'create' ? makeBody(`bench-${randomUUID()}`) : mode === 'redeliver' ? makeBody(redeliverJobId) : retryBody
    const id = mode === 'retry' ? `msg_retry_${redeliverJobId}` : `msg_${randomUUID()}`
    signed.push({
      body,
      headers: {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': String(timestamp),
        'webhook-signature': sign(key, id, timestamp, body),
      },
    })
  }
  return signed
}

interface LoadResult {
  seconds: number
  requests: number
  ok: number
  non2xx: number
  errors: number
  timeouts: number
  overrun: number
  p50: number
  p99: number
  rps: number
}

/** One autocannon run over pre-signed deliveries, each sent once; stops early if they run out. */
async function drive (urls: string[], deliveries: Signed[], seconds: number, acknowledged: Set<string>): Promise<LoadResult> {
  let next = 0
  let overrun = 0
  let last: Signed = deliveries[0]!
  // Without a callback autocannon returns its instance, which is also a promise of the result.
  const instance = autocannon({
    // autocannon takes several URLs (its types say one) and spreads the connections over them.
    url: (urls.length === 1 ? urls[0]! : urls) as string,
    connections,
    duration: seconds,
    method: 'POST',
    timeout: 60,
    requests: [{
      setupRequest: (request) => {
        const delivery = deliveries[next++]
        if (!delivery) {
          // Out of pre-signed deliveries: end the run; this one is a replay, counted apart.
          overrun++
          instance.stop()
          return { ...request, path: BOOK_COMPLETION_PATH, body: last.body, headers: last.headers }
        }
        last = delivery
        return { ...request, path: BOOK_COMPLETION_PATH, body: delivery.body, headers: delivery.headers }
      },
      onResponse: (status, body) => {
        if (status === 200) acknowledged.add((JSON.parse(body) as { jobId: string }).jobId)
      },
    }],
  }) as unknown as autocannon.Instance & Promise<autocannon.Result>
  const result = await instance
  const ok = result['2xx']
  return {
    seconds: result.duration,
    requests: result.requests.total,
    ok,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    overrun,
    p50: result.latency.p50,
    p99: result.latency.p99,
    rps: (ok - overrun) / result.duration,
  }
}

function loadSnapshot (): string {
  const loadavg = readFileSync('/proc/loadavg', 'utf8').trim()
  return loadavg.split(' ').slice(0, 3).join(' ')
}

/**
 * Exactly once: every acknowledged job has one book with positions 1..N once, every book's job
 * is COMPLETED, and no more books exist than jobs sent (requests still in flight when a run
 * stops are applied but not acknowledged to the load generator).
 */
async function checkIntegrity (databaseUrl: string, acknowledged: Set<string>, sent: number): Promise<{ ok: boolean, books: number, chapters: number, detail: string }> {
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    const { rows: [row] } = await client.query<{ books: number, chapters: number, completed: number, acknowledged: number, bad: number }>(`
      SELECT (SELECT count(*)::int FROM books WHERE job_id NOT LIKE 'floor-%') AS books,
             (SELECT count(*)::int FROM chapters c JOIN books b ON b.id = c.book_id WHERE b.job_id NOT LIKE 'floor-%') AS chapters,
             (SELECT count(*)::int FROM book_jobs WHERE status = 'COMPLETED' AND id NOT LIKE 'floor-%') AS completed,
             (SELECT count(*)::int FROM books WHERE job_id = ANY($2::text[])) AS acknowledged,
             (SELECT count(*)::int FROM (
                SELECT b.id FROM books b LEFT JOIN chapters c ON c.book_id = b.id
                GROUP BY b.id HAVING count(c.id) <> $1 OR min(c.position) <> 1 OR max(c.position) <> $1) AS wrong) AS bad`,
    [chapterCount, [...acknowledged]])
    const { books, chapters, completed, bad } = row!
    const problems: string[] = []
    if (bad > 0) problems.push(`${bad} book(s) without exactly positions 1..${chapterCount}`)
    if (completed !== books) problems.push(`${completed} completed jobs for ${books} books`)
    if (row!.acknowledged !== acknowledged.size) problems.push(`${row!.acknowledged} books for ${acknowledged.size} acknowledged jobs`)
    if (books > sent) problems.push(`${books} books for ${sent} jobs sent`)
    return { ok: problems.length === 0, books, chapters, detail: problems.join('; ') || 'one book per acknowledged job, its chapters once' }
  } finally {
    await client.end()
  }
}

/** `npm run dev` without the watcher: a first start (creates and migrates the embedded database), then a second. */
async function timeDevStart (workDir: string): Promise<{ firstMs: number, againMs: number }> {
  const start = async () => {
    const dev = await startService({
      command: [process.execPath, '--import', 'tsx', 'src/server.ts'],
      env: { ENVIRONMENT: 'development', DATA_DIR: join(workDir, 'dev-data'), DATABASE_URL: '', LOG_LEVEL: 'warn' },
      logFile: join(workDir, 'dev.log'),
      cwd: PROJECT_DIR,
    })
    await dev.stop()
    return dev.startMs
  }
  return { firstMs: await start(), againMs: await start() }
}

function printTable (rows: Array<[string, string]>): void {
  const width = Math.max(...rows.map(([name]) => name.length))
  for (const [name, value] of rows) process.stdout.write(`${name.padEnd(width)}  ${value}\n`)
}

async function main (): Promise<void> {
  const workDir = mkdtempSync(join(tmpdir(), 'bcw-bench-'))
  const loadBefore = loadSnapshot()
  process.stdout.write(`load average before: ${loadBefore}\n`)
  if (!args['skip-build']) execFileSync('npm', ['run', 'build'], { cwd: PROJECT_DIR, stdio: ['ignore', 'ignore', 'inherit'] })

  const book = makeBook(chapterCount, size.bodyBytes)
  const makeBody = bodyFactory(book)
  const bodyBytes = makeBody('bench-00000000-0000-0000-0000-000000000000').length
  const database = await createBenchDatabase()
  let pgbouncer: RunningPgbouncer | undefined
  const services: RunningService[] = []
  try {
    if (args.pgbouncer) pgbouncer = await startPgbouncer(database.url)
    const serviceUrl = pgbouncer ? pgbouncer.urlFor(database.url) : args.socket ? viaSocket(database.url, args.socket) : database.url
    const profileDir = args['profile-dir'] ?? join(workDir, 'profiles')
    for (let i = 0; i < replicaCount; i++) {
      services.push(await startService({
        command: [process.execPath, ...(args.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), 'dist/server.js'],
        env: { ENVIRONMENT: 'production', DATABASE_URL: serviceUrl, WEBHOOK_SECRET: secret, LOG_LEVEL: 'info', ...serviceEnv },
        logFile: join(workDir, `service-${i}.log`),
        cwd: PROJECT_DIR,
      }))
    }
    const urls = services.map((service) => service.url)
    const redeliverJobId = `bench-redeliver-${randomUUID()}`
    const maxPresigned = Math.max(connections * 3, Math.floor(PRESIGN_BUDGET_BYTES / bodyBytes))

    // Warm-up: JIT, pools, caches; and an estimate of how many deliveries the measured run needs.
    const warmupDeliveries = presign(Math.min(maxPresigned, Math.max(connections * 5, Math.ceil(1000 * warmupSeconds * 94_000 / bodyBytes))), makeBody, redeliverJobId)
    const acknowledged = new Set<string>()
    const warm = await drive(urls, warmupDeliveries, warmupSeconds, acknowledged)
    const warmupSent = Math.min(warm.requests, warmupDeliveries.length) + connections
    warmupDeliveries.length = 0
    const needed = Math.ceil(Math.max(warm.rps, 1) * durationSeconds * 2) + connections * 4
    const deliveries = presign(Math.min(maxPresigned, needed), makeBody, redeliverJobId)

    const loadAtStart = loadSnapshot()
    const backends = new DatabaseBackendsCpu(database.postmasterPid, database.name)
    const serviceCpuBefore = services.map((service) => processCpuMs(service.pid))
    const postgresBefore = postgresServerCpuMs(database.postmasterPid)
    const benchCpuBefore = process.cpuUsage()
    backends.start()
    const run = await drive(urls, deliveries, durationSeconds, acknowledged)
    const backendsMs = backends.stop()
    const postgresMs = postgresServerCpuMs(database.postmasterPid) - postgresBefore
    const serviceMs = services.reduce((sum, service, i) => sum + processCpuMs(service.pid) - serviceCpuBefore[i]!, 0)
    const benchCpu = process.cpuUsage(benchCpuBefore)
    const rssPeakMb = Math.max(...services.map((service) => peakRssMb(service.pid)))
    const loadAtEnd = loadSnapshot()

    const delivered = run.ok - run.overrun
    const sent = mode === 'create' ? warmupSent + Math.min(run.requests, deliveries.length) + connections : 1
    const integrity = await checkIntegrity(database.url, acknowledged, sent)
    deliveries.length = 0

    await Promise.all(services.map((service) => service.stop()))
    let profile: ReturnType<typeof topSelfTime> | undefined
    if (args.profile) {
      const [file] = readdirSync(profileDir).filter((name) => name.endsWith('.cpuprofile')).sort().reverse()
      if (file) profile = topSelfTime(join(profileDir, file))
    }

    const floors: FloorResult[] = []
    for (const protocol of args['skip-floor'] ? [] : floorProtocols) {
      floors.push(await runFloor({
        book,
        databaseUrl: database.url,
        database: database.name,
        postmasterPid: database.postmasterPid,
        connections,
        durationSeconds,
        protocol,
        workDir,
      }))
    }
    const floor = floors[0]
    const devStartMs = args['dev-start'] ? await timeDevStart(workDir) : undefined

    const perDelivery = (ms: number) => delivered > 0 ? ms / delivered : NaN
    const summary = {
      args: process.argv.slice(2).filter((arg) => arg !== '--skip-build').join(' ') || '(defaults)',
      at: new Date().toISOString(),
      mode,
      size: args.size,
      ascii: args.ascii,
      chapters: chapterCount,
      bodyBytes,
      connections,
      replicas: replicaCount,
      pgbouncer: pgbouncer ? pgbouncer.version : false,
      transport: pgbouncer ? 'pgbouncer' : args.socket ? 'unix' : 'tcp',
      seconds: run.seconds,
      deliveries: delivered,
      rps: round(run.rps, 1),
      p50Ms: run.p50,
      p99Ms: run.p99,
      non2xx: run.non2xx,
      errors: run.errors + run.timeouts,
      overrun: run.overrun,
      rssPeakMb: round(rssPeakMb, 1),
      serviceCpuMsPerDelivery: round(perDelivery(serviceMs), 3),
      postgresCpuMsPerDelivery: round(perDelivery(postgresMs), 3),
      postgresBackendsCpuMsPerDelivery: round(perDelivery(backendsMs), 3),
      loadGeneratorCpuMsPerDelivery: round(perDelivery((benchCpu.user + benchCpu.system) / 1000), 3),
      floorTps: floor ? round(floor.tps, 1) : null,
      floorProtocol: floor?.protocol ?? null,
      floorPostgresCpuMsPerTx: floor ? round(floor.postgresCpuMsPerTx, 3) : null,
      floorBackendsCpuMsPerTx: floor ? round(floor.backendsCpuMsPerTx, 3) : null,
      ratio: floor ? round(run.rps / floor.tps, 3) : null,
      postgresCpuVsFloor: floor ? round(backendsMs / delivered / floor.backendsCpuMsPerTx, 3) : null,
      floors: floors.map((each) => ({
        protocol: each.protocol,
        tps: round(each.tps, 1),
        postgresCpuMsPerTx: round(each.postgresCpuMsPerTx, 3),
        backendsCpuMsPerTx: round(each.backendsCpuMsPerTx, 3),
        ratio: round(run.rps / each.tps, 3),
        postgresCpuVsFloor: round(backendsMs / delivered / each.backendsCpuMsPerTx, 3),
      })),
      productionStartMs: round(Math.max(...services.map((service) => service.startMs)), 0),
      devStartMs: devStartMs === undefined ? null : round(devStartMs.firstMs, 0),
      devRestartMs: devStartMs === undefined ? null : round(devStartMs.againMs, 0),
      integrity: integrity.ok,
      load: { before: loadBefore, start: loadAtStart, end: loadAtEnd },
    }

    process.stdout.write('\n')
    printTable([
      ['mode / book', `${mode}, ${chapterCount} chapters, ${(bodyBytes / 1000).toFixed(1)} KB body${args.ascii ? ' (non-ASCII as \\u escapes)' : ''}`],
      ['setup', `${replicaCount} replica(s), ${connections} connections, ${pgbouncer ? `through PgBouncer ${pgbouncer.version}` : args.socket ? `Unix socket ${args.socket}` : 'TCP loopback'} to Postgres`],
      ['deliveries', `${delivered} in ${run.seconds} s (warm-up ${warm.ok} in ${warm.seconds} s)`],
      ['throughput', `${summary.rps} deliveries/s`],
      ['latency', `p50 ${run.p50} ms, p99 ${run.p99} ms`],
      ['failures', `${run.non2xx} non-2xx, ${run.errors} errors, ${run.timeouts} timeouts, ${run.overrun} overrun`],
      ['service CPU', `${summary.serviceCpuMsPerDelivery} ms/delivery (RSS peak ${summary.rssPeakMb} MB)`],
      ['Postgres CPU', `${summary.postgresCpuMsPerDelivery} ms/delivery whole server, ${summary.postgresBackendsCpuMsPerDelivery} ms in this database's backends`],
      ['load generator CPU', `${summary.loadGeneratorCpuMsPerDelivery} ms/delivery`],
      ...(floors.length === 0
        ? [['floor (pgbench)', 'skipped'] as [string, string]]
        : summary.floors.flatMap((each): Array<[string, string]> => [
          [`floor -M ${each.protocol}`, `${each.tps} tx/s, Postgres ${each.postgresCpuMsPerTx} ms/tx whole server, ${each.backendsCpuMsPerTx} ms in backends`],
          [`ratio -M ${each.protocol}`, `${each.ratio} = service rps / floor tps; Postgres (backends) ${each.postgresCpuVsFloor}x the floor's`],
        ])),
      ['start', `production ${summary.productionStartMs} ms${devStartMs === undefined ? '' : `, development (embedded) first start ${summary.devStartMs} ms, then ${summary.devRestartMs} ms`}`],
      ['integrity', `${integrity.ok ? 'ok' : 'FAILED'}: ${integrity.detail} (${integrity.books} books, ${integrity.chapters} chapters)`],
      ['load average', `before ${loadBefore}, run start ${loadAtStart}, run end ${loadAtEnd}`],
    ])
    if (profile) {
      process.stdout.write(`\nservice CPU profile: ${profile.busyMs.toFixed(0)} ms busy; top self time\n`)
      for (const entry of profile.top) {
        process.stdout.write(`  ${(entry.share * 100).toFixed(1).padStart(5)}%  ${entry.ms.toFixed(0).padStart(6)} ms  ${entry.name}  ${entry.where}\n`)
      }
    }
    process.stdout.write(`${JSON.stringify(summary)}\n`)
    if (!integrity.ok) process.exitCode = 1
  } finally {
    await Promise.all(services.map((service) => service.stop()))
    await pgbouncer?.stop()
    await database.drop()
    rmSync(workDir, { recursive: true, force: true })
  }
}

/** node-postgres reads a `host` query parameter that is a directory as a Unix socket. */
function viaSocket (url: string, directory: string): string {
  const through = new URL(url)
  through.searchParams.set('host', directory)
  return through.toString()
}

function round (value: number, digits: number): number {
  const factor = 10 ** digits
  return Math.round(value * factor) / factor
}

await main()
