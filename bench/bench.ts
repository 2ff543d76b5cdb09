/**
 * `npm run bench`: drives the built service (production mode, signed requests) on loopback with
 * autocannon, reads CPU per delivery from /proc, and runs pgbench with the same writes as the floor.
 * See bench/README.md for the method and `npm run bench -- --help` for the options.
 */
import { execFileSync } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { BookData } from '../src/webhooks/payload.ts'
import { bookOfSize, completedDelivery } from '../scripts/deliveries.ts'
import { BENCH_USER_ID, createBenchDatabase, type BenchDatabase } from './database.ts'
import { runFloor, type FloorResult } from './floor.ts'
import { drive, presign, type LoadResult } from './load.ts'
import { exitOnBadOption, HELP, parseOptions, UsageError, type BenchOptions } from './options.ts'
import { DatabaseBackendsCpu, peakRssMb, postgresServerCpuMs, processCpuMs } from './proc.ts'
import { topSelfTime } from './profile.ts'
import { startService, type RunningService } from './service.ts'
import { startPgbouncer, type RunningPgbouncer } from '../test/support/pgbouncer.ts'
import { adminQuery } from '../test/support/postgres.ts'

/** Pre-signed deliveries are kept in memory; beyond this budget the run stops early instead. */
const PRESIGN_BUDGET_BYTES = 1_500_000_000
const PROJECT_DIR = new URL('..', import.meta.url).pathname

/** One line per phase on stderr, so stdout stays the report (and its last line the JSON). */
function progress (message: string): void {
  process.stderr.write(`bench: ${message}\n`)
}

function loadSnapshot (): string {
  const loadavg = readFileSync('/proc/loadavg', 'utf8').trim()
  return loadavg.split(' ').slice(0, 3).join(' ')
}

/** Splices job ids into one serialised body instead of re-serialising the book per request. */
function bodyFactory (book: BookData, ascii: boolean): (jobId: string) => Buffer {
  const marker = `__job_${randomUUID()}__`
  const body = JSON.stringify(completedDelivery({ jobId: marker, userId: BENCH_USER_ID, book }))
  const [before, after] = (ascii ? escapeNonAscii(body) : body).split(marker) as [string, string]
  const head = Buffer.from(before)
  const tail = Buffer.from(after)
  return (jobId) => Buffer.concat([head, Buffer.from(jobId), tail])
}

/** What Python's `json.dumps(..., ensure_ascii=True)` sends: UTF-16 units above U+007F as `\\uXXXX`. */
function escapeNonAscii (json: string): string {
  return json.replace(/[\u0080-\uffff]/g, (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** node-postgres reads a `host` query parameter that is a directory as a Unix socket. */
function viaSocket (url: string, directory: string): string {
  const through = new URL(url)
  through.searchParams.set('host', directory)
  return through.toString()
}

interface Services { urls: string[], running: RunningService[], pgbouncer: RunningPgbouncer | undefined }

/** The service processes (and PgBouncer when asked) on the bench database, in production mode. */
async function startServices (options: BenchOptions, database: BenchDatabase, secret: string, workDir: string, profileDir: string, services: Services): Promise<void> {
  if (options.pgbouncer) {
    services.pgbouncer = await startPgbouncer(database.url)
    progress(`PgBouncer ${services.pgbouncer.version} in front of the database (transaction pooling)`)
  }
  const serviceUrl = services.pgbouncer ? services.pgbouncer.urlFor(database.url) : options.socket ? viaSocket(database.url, options.socket) : database.url
  for (let i = 0; i < options.replicas; i++) {
    services.running.push(await startService({
      command: [process.execPath, ...(options.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), 'dist/server.js'],
      env: { ENVIRONMENT: 'production', DATABASE_URL: serviceUrl, WEBHOOK_SECRET: secret, LOG_LEVEL: 'info', ...options.serviceEnv },
      logFile: join(workDir, `service-${i}.log`),
      cwd: PROJECT_DIR,
    }))
  }
  services.urls = services.running.map((service) => service.url)
  progress(`${options.replicas} service process(es) answer /health`)
}

interface Measured {
  warm: LoadResult
  run: LoadResult
  /** Jobs sent, warm-up included (for `create`; one job otherwise). */
  sent: number
  serviceMs: number
  postgresMs: number
  backendsMs: number
  benchCpuMs: number
  rssPeakMb: number
  loadAtStart: string
  loadAtEnd: string
}

/**
 * The warm-up (JIT, pools, caches), which also estimates how many deliveries the measured run
 * needs, then the measured run with the CPU of every process read before and after.
 */
async function warmUpAndMeasure (options: BenchOptions, services: RunningService[], urls: string[], database: BenchDatabase, key: Buffer, makeBody: (jobId: string) => Buffer, bodyBytes: number, acknowledged: Set<string>): Promise<Measured> {
  const { mode, connections } = options
  const redeliverJobId = `bench-redeliver-${randomUUID()}`
  const maxPresigned = Math.max(connections * 3, Math.floor(PRESIGN_BUDGET_BYTES / bodyBytes))

  const warmupDeliveries = presign(Math.min(maxPresigned, Math.max(connections * 5, Math.ceil(1000 * options.warmupSeconds * 94_000 / bodyBytes))), mode, key, makeBody, redeliverJobId)
  progress(`warm-up: ${options.warmupSeconds} s, ${connections} connections`)
  const warm = await drive(urls, warmupDeliveries, connections, options.warmupSeconds, acknowledged)
  const warmupSent = Math.min(warm.requests, warmupDeliveries.length) + connections
  warmupDeliveries.length = 0
  const needed = Math.ceil(Math.max(warm.rps, 1) * options.durationSeconds * 2) + connections * 4
  const deliveries = presign(Math.min(maxPresigned, needed), mode, key, makeBody, redeliverJobId)

  progress(`measuring: ${options.durationSeconds} s, ${connections} connections, ${deliveries.length} deliveries signed ahead`)
  const loadAtStart = loadSnapshot()
  const backends = new DatabaseBackendsCpu(database.postmasterPid, database.name)
  const serviceCpuBefore = services.map((service) => processCpuMs(service.pid))
  const postgresBefore = postgresServerCpuMs(database.postmasterPid)
  const benchCpuBefore = process.cpuUsage()
  backends.start()
  const run = await drive(urls, deliveries, connections, options.durationSeconds, acknowledged)
  const backendsMs = backends.stop()
  const postgresMs = postgresServerCpuMs(database.postmasterPid) - postgresBefore
  const serviceMs = services.reduce((sum, service, i) => sum + processCpuMs(service.pid) - serviceCpuBefore[i]!, 0)
  const benchCpu = process.cpuUsage(benchCpuBefore)
  const rssPeakMb = Math.max(...services.map((service) => peakRssMb(service.pid)))
  const loadAtEnd = loadSnapshot()
  const sent = mode === 'create' ? warmupSent + Math.min(run.requests, deliveries.length) + connections : 1
  deliveries.length = 0
  return { warm, run, sent, serviceMs, postgresMs, backendsMs, benchCpuMs: (benchCpu.user + benchCpu.system) / 1000, rssPeakMb, loadAtStart, loadAtEnd }
}

interface Integrity { ok: boolean, books: number, chapters: number, detail: string }

/**
 * Exactly once: every acknowledged job has one book with positions 1..N once, every book's job
 * is COMPLETED, and no more books exist than jobs sent (requests still in flight when a run
 * stops are applied but not acknowledged to the load generator).
 */
async function checkIntegrity (databaseUrl: string, chapterCount: number, acknowledged: Set<string>, sent: number): Promise<Integrity> {
  const [row] = await adminQuery<{ books: number, chapters: number, completed: number, acknowledged: number, bad: number }>(`
      SELECT (SELECT count(*)::int FROM books WHERE job_id NOT LIKE 'floor-%') AS books,
             (SELECT count(*)::int FROM chapters c JOIN books b ON b.id = c.book_id WHERE b.job_id NOT LIKE 'floor-%') AS chapters,
             (SELECT count(*)::int FROM book_jobs WHERE status = 'COMPLETED' AND id NOT LIKE 'floor-%') AS completed,
             (SELECT count(*)::int FROM books WHERE job_id = ANY($2::text[])) AS acknowledged,
             (SELECT count(*)::int FROM (
                SELECT b.id FROM books b LEFT JOIN chapters c ON c.book_id = b.id
                GROUP BY b.id HAVING count(c.id) <> $1 OR min(c.position) <> 1 OR max(c.position) <> $1) AS wrong) AS bad`,
  databaseUrl, [chapterCount, [...acknowledged]])
  const { books, chapters, completed, bad } = row!
  const problems: string[] = []
  if (bad > 0) problems.push(`${bad} book(s) without exactly positions 1..${chapterCount}`)
  if (completed !== books) problems.push(`${completed} completed jobs for ${books} books`)
  if (row!.acknowledged !== acknowledged.size) problems.push(`${row!.acknowledged} books for ${acknowledged.size} acknowledged jobs`)
  if (books > sent) problems.push(`${books} books for ${sent} jobs sent`)
  return { ok: problems.length === 0, books, chapters, detail: problems.join('; ') || 'one book per acknowledged job, its chapters once' }
}

/** The newest `.cpuprofile` the service wrote, as its top self time. */
function readProfile (profileDir: string): ReturnType<typeof topSelfTime> | undefined {
  const [file] = readdirSync(profileDir).filter((name) => name.endsWith('.cpuprofile')).sort().reverse()
  return file ? topSelfTime(join(profileDir, file)) : undefined
}

/** pgbench with the same writes, once per protocol asked for, the first being the primary floor. */
async function runFloors (options: BenchOptions, book: BookData, database: BenchDatabase, workDir: string): Promise<FloorResult[]> {
  const floors: FloorResult[] = []
  for (const protocol of options.floorProtocols) {
    progress(`floor: pgbench -M ${protocol}, ${options.durationSeconds} s, ${options.connections} connections`)
    floors.push(await runFloor({
      book,
      databaseUrl: database.url,
      database: database.name,
      postmasterPid: database.postmasterPid,
      connections: options.connections,
      durationSeconds: options.durationSeconds,
      protocol,
      workDir,
    }))
  }
  return floors
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

function round (value: number, digits: number): number {
  const factor = 10 ** digits
  return Math.round(value * factor) / factor
}

interface Outcome {
  options: BenchOptions
  bodyBytes: number
  services: Services
  measured: Measured
  integrity: Integrity
  floors: FloorResult[]
  devStart: { firstMs: number, againMs: number } | undefined
  loadBefore: string
}

/** The closing JSON line: what `npm run bench:table` renders and docs/bench/*.jsonl keep. */
function summarize ({ options, bodyBytes, services, measured, integrity, floors, devStart, loadBefore }: Outcome) {
  const { run } = measured
  const delivered = run.ok - run.overrun
  const perDelivery = (ms: number) => delivered > 0 ? ms / delivered : NaN
  const floor = floors[0]
  const { pgbouncer } = services
  return {
    args: options.label,
    at: new Date().toISOString(),
    // The service runs on the node first on PATH, the same as this process.
    node: process.version,
    mode: options.mode,
    size: options.size,
    ascii: options.ascii,
    chapters: options.chapters,
    bodyBytes,
    connections: options.connections,
    replicas: options.replicas,
    pgbouncer: pgbouncer ? pgbouncer.version : false,
    transport: pgbouncer ? 'pgbouncer' : options.socket ? 'unix' : 'tcp',
    seconds: run.seconds,
    deliveries: delivered,
    rps: round(run.rps, 1),
    p50Ms: run.p50,
    p99Ms: run.p99,
    non2xx: run.non2xx,
    errors: run.errors + run.timeouts,
    overrun: run.overrun,
    rssPeakMb: round(measured.rssPeakMb, 1),
    serviceCpuMsPerDelivery: round(perDelivery(measured.serviceMs), 3),
    postgresCpuMsPerDelivery: round(perDelivery(measured.postgresMs), 3),
    postgresBackendsCpuMsPerDelivery: round(perDelivery(measured.backendsMs), 3),
    loadGeneratorCpuMsPerDelivery: round(perDelivery(measured.benchCpuMs), 3),
    floorTps: floor ? round(floor.tps, 1) : null,
    floorProtocol: floor?.protocol ?? null,
    floorPostgresCpuMsPerTx: floor ? round(floor.postgresCpuMsPerTx, 3) : null,
    floorBackendsCpuMsPerTx: floor ? round(floor.backendsCpuMsPerTx, 3) : null,
    ratio: floor ? round(run.rps / floor.tps, 3) : null,
    postgresCpuVsFloor: floor ? round(measured.backendsMs / delivered / floor.backendsCpuMsPerTx, 3) : null,
    floors: floors.map((each) => ({
      protocol: each.protocol,
      tps: round(each.tps, 1),
      postgresCpuMsPerTx: round(each.postgresCpuMsPerTx, 3),
      backendsCpuMsPerTx: round(each.backendsCpuMsPerTx, 3),
      ratio: round(run.rps / each.tps, 3),
      postgresCpuVsFloor: round(measured.backendsMs / delivered / each.backendsCpuMsPerTx, 3),
    })),
    productionStartMs: round(Math.max(...services.running.map((service) => service.startMs)), 0),
    devStartMs: devStart === undefined ? null : round(devStart.firstMs, 0),
    devRestartMs: devStart === undefined ? null : round(devStart.againMs, 0),
    integrity: integrity.ok,
    load: { before: loadBefore, start: measured.loadAtStart, end: measured.loadAtEnd },
  }
}

function printTable (rows: Array<[string, string]>): void {
  const width = Math.max(...rows.map(([name]) => name.length))
  for (const [name, value] of rows) process.stdout.write(`${name.padEnd(width)}  ${value}\n`)
}

/** The report on stdout: the table, the profile if asked, and last the JSON line. */
function printReport (outcome: Outcome, summary: ReturnType<typeof summarize>, profile: ReturnType<typeof topSelfTime> | undefined): void {
  const { options, bodyBytes, services: { pgbouncer }, measured: { warm, run, loadAtStart, loadAtEnd }, integrity, floors, devStart, loadBefore } = outcome
  process.stdout.write('\n')
  printTable([
    ['mode / book', `${options.mode}, ${options.chapters} chapters, ${(bodyBytes / 1000).toFixed(1)} KB body${options.ascii ? ' (non-ASCII as \\u escapes)' : ''}`],
    ['setup', `${options.replicas} replica(s), ${options.connections} connections, ${pgbouncer ? `through PgBouncer ${pgbouncer.version}` : options.socket ? `Unix socket ${options.socket}` : 'TCP loopback'} to Postgres`],
    ['deliveries', `${summary.deliveries} in ${run.seconds} s (warm-up ${warm.ok} in ${warm.seconds} s)`],
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
    ['start', `production ${summary.productionStartMs} ms${devStart === undefined ? '' : `, development (embedded) first start ${summary.devStartMs} ms, then ${summary.devRestartMs} ms`}`],
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
}

async function bench (options: BenchOptions): Promise<boolean> {
  const workDir = mkdtempSync(join(tmpdir(), 'bcw-bench-'))
  const loadBefore = loadSnapshot()
  process.stdout.write(`load average before: ${loadBefore}\n`)
  if (!options.skipBuild) {
    progress('building dist/ (npm run build)')
    execFileSync('npm', ['run', 'build'], { cwd: PROJECT_DIR, stdio: ['ignore', 'ignore', 'inherit'] })
  }

  const secret = `whsec_${randomBytes(32).toString('base64')}`
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64')
  const book = bookOfSize(options.chapters, options.bodyBytes)
  const makeBody = bodyFactory(book, options.ascii)
  const bodyBytes = makeBody('bench-00000000-0000-0000-0000-000000000000').length
  const database = await createBenchDatabase()
  progress(`database ${database.name} created and migrated; book of ${options.chapters} chapters, ${(bodyBytes / 1000).toFixed(1)} KB body`)
  const services: Services = { urls: [], running: [], pgbouncer: undefined }
  try {
    const profileDir = options.profileDir ?? join(workDir, 'profiles')
    await startServices(options, database, secret, workDir, profileDir, services)
    const acknowledged = new Set<string>()
    const measured = await warmUpAndMeasure(options, services.running, services.urls, database, key, makeBody, bodyBytes, acknowledged)
    progress('checking exactly-once in the database')
    const integrity = await checkIntegrity(database.url, options.chapters, acknowledged, measured.sent)
    await Promise.all(services.running.map((service) => service.stop()))
    const profile = options.profile ? readProfile(profileDir) : undefined
    const floors = await runFloors(options, book, database, workDir)
    if (options.devStart) progress('timing two development starts on a fresh embedded database')
    const devStart = options.devStart ? await timeDevStart(workDir) : undefined

    const outcome: Outcome = { options, bodyBytes, services, measured, integrity, floors, devStart, loadBefore }
    printReport(outcome, summarize(outcome), profile)
    progress(integrity.ok ? 'done' : 'done: the integrity check FAILED')
    return integrity.ok
  } finally {
    await Promise.all(services.running.map((service) => service.stop()))
    await services.pgbouncer?.stop()
    await database.drop()
    rmSync(workDir, { recursive: true, force: true })
  }
}

async function main (): Promise<number> {
  let options
  try {
    options = parseOptions(process.argv.slice(2))
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    return exitOnBadOption(err.message, 'npm run bench -- --help')
  }
  if (!options) {
    process.stdout.write(`${HELP}\n`)
    return 0
  }
  try {
    return (await bench(options)) ? 0 : 1
  } catch (err) {
    // The cause as pgbench, PgBouncer or the service gave it (their output included), not a stack.
    process.stderr.write(`bench failed: ${(err as Error).message}\n`)
    return 1
  }
}

process.exitCode = await main()
