/**
 * `npm run bench:refused`: a flood of refused uploads (bodies over BODY_LIMIT_BYTES, each written
 * whole before its answer is read, as Python's http.client does) against the service process,
 * while /health is probed: what the flood costs (RSS, /health latency) and what the senders got.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { request } from 'undici'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { MAX_CONCURRENT_DRAINS } from '../src/plugins/refused-uploads.ts'
import { chunkedFrames, sendWholeThenRead } from '../test/support/raw-socket.ts'
import { createBenchDatabase } from './database.ts'
import { exitOnBadOption } from './options.ts'
import { peakRssMb } from './proc.ts'
import { startService } from './service.ts'

const USAGE = `npm run bench:refused -- [options]
  --senders N     concurrent senders, each sending one upload after the other (default 64)
  --seconds S     how long the flood lasts (default 10)
  --megabytes M   size of each body, over the 10 MiB limit (default 12)
  --framing F     declared (Content-Length), chunked, or both: half the senders each (default both)
  -h, --help      this text`

let values
try {
  ({ values } = parseArgs({
    options: {
      senders: { type: 'string', default: '64' },
      seconds: { type: 'string', default: '10' },
      megabytes: { type: 'string', default: '12' },
      framing: { type: 'string', default: 'both' },
      help: { type: 'boolean', short: 'h' },
    },
  }))
} catch (err) {
  exitOnBadOption((err as Error).message, USAGE)
}
if (values.help) {
  process.stdout.write(`${USAGE}\n`)
  process.exit(0)
}
const senders = Number(values.senders)
const seconds = Number(values.seconds)
const megabytes = Number(values.megabytes)
if (!Number.isInteger(senders) || senders < 1) exitOnBadOption('--senders must be a positive integer', USAGE)
if (!(seconds > 0)) exitOnBadOption('--seconds must be positive', USAGE)
if (!(megabytes > 10.5)) exitOnBadOption('--megabytes must be over the 10 MiB limit (more than 10.5)', USAGE)
if (!['declared', 'chunked', 'both'].includes(values.framing)) exitOnBadOption('--framing must be declared, chunked or both', USAGE)

const progress = (line: string) => process.stderr.write(`${line}\n`)
const body = Buffer.alloc(Math.round(megabytes * 1e6), 'x')
const frames = chunkedFrames(body)
const head = (chunked: boolean) => `POST ${BOOK_COMPLETION_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
  (chunked ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${body.length}\r\n`) + '\r\n'

function rssMb (pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return match ? Number(match[1]) / 1024 : 0
}

async function probeHealth (url: string): Promise<number> {
  const started = performance.now()
  const response = await request(`${url}/health`)
  await response.body.dump()
  if (response.statusCode !== 200) throw new Error(`/health answered ${response.statusCode}`)
  return performance.now() - started
}

function percentiles (samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (p: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 10) / 10
  return { probes: sorted.length, p50: at(0.5), p99: at(0.99), max: at(1) }
}

const workDir = mkdtempSync(join(tmpdir(), 'bcw-refused-'))
progress('creating the database')
const database = await createBenchDatabase()
try {
  progress('starting the service (node --import tsx src/server.ts, production)')
  const service = await startService({
    command: [process.execPath, '--import', 'tsx', 'src/server.ts'],
    env: { ENVIRONMENT: 'production', DATABASE_URL: database.url, WEBHOOK_SECRET: `whsec_${Buffer.alloc(32, 7).toString('base64')}`, LOG_LEVEL: 'warn' },
    logFile: join(workDir, 'service.log'),
    cwd: process.cwd(),
  })
  try {
    const idle: number[] = []
    for (let i = 0; i < 100; i++) idle.push(await probeHealth(service.url))
    const idleRssMb = rssMb(service.pid)

    progress(`flooding: ${senders} senders, ${seconds} s, ${megabytes} MB bodies, framing ${values.framing}`)
    const outcomes: Record<string, number> = {}
    const during: number[] = []
    let maxRssMb = 0
    const until = Date.now() + seconds * 1000
    const sampler = setInterval(() => { maxRssMb = Math.max(maxRssMb, rssMb(service.pid)) }, 100)
    const probing = (async () => {
      while (Date.now() < until) {
        during.push(await probeHealth(service.url))
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    })()
    await Promise.all(Array.from({ length: senders }, async (_, i) => {
      const chunked = values.framing === 'chunked' || (values.framing === 'both' && i % 2 === 1)
      while (Date.now() < until) {
        const result = await sendWholeThenRead(service.url, head(chunked), chunked ? frames : body)
        const status = /^HTTP\/1\.1 (\d{3})/.exec(result.received)?.[1]
        const outcome = status ? `${status} read` : `broken (${result.writeError ?? result.readError ?? 'closed'})`
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1
      }
    }))
    await probing
    clearInterval(sampler)
    const peakMb = peakRssMb(service.pid)
    const after = await probeHealth(service.url)

    const uploads = Object.values(outcomes).reduce((sum, n) => sum + n, 0)
    const report = {
      senders,
      seconds,
      megabytes,
      framing: values.framing,
      maxConcurrentDrains: MAX_CONCURRENT_DRAINS,
      uploads,
      uploadsPerSecond: Math.round(uploads / seconds),
      outcomes,
      rssMb: { idle: Math.round(idleRssMb), maxSampled: Math.round(maxRssMb), peakVmHWM: Math.round(peakMb) },
      healthMs: { idle: percentiles(idle), flood: percentiles(during), after: Math.round(after * 10) / 10 },
      loadAverage: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
    }
    process.stdout.write(`uploads: ${uploads} in ${seconds} s (${report.uploadsPerSecond}/s), ${JSON.stringify(outcomes)}\n`)
    process.stdout.write(`RSS: idle ${report.rssMb.idle} MB, max sampled ${report.rssMb.maxSampled} MB, peak (VmHWM) ${report.rssMb.peakVmHWM} MB\n`)
    process.stdout.write(`/health: idle p50 ${report.healthMs.idle.p50} ms p99 ${report.healthMs.idle.p99} ms; ` +
      `flood p50 ${report.healthMs.flood.p50} ms p99 ${report.healthMs.flood.p99} ms max ${report.healthMs.flood.max} ms (${report.healthMs.flood.probes} probes)\n`)
    process.stdout.write(`${JSON.stringify(report)}\n`)
  } finally {
    await service.stop()
  }
} finally {
  await database.drop()
  rmSync(workDir, { recursive: true, force: true })
}
