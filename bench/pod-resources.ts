import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { Agent } from 'undici'
import { completedDelivery } from '../scripts/deliveries.ts'
import { deliver, signedBytesHeaders } from '../test/helper.ts'
import { adminQuery } from '../test/support/postgres.ts'
import { exitOnBadOption } from './options.ts'
import { peakRssMb, processCpuMs } from './proc.ts'

/**
 * What deploy/kubernetes/deployment.yaml's resources are derived from: the memory and CPU of the
 * service in a running container of the image (under the memory limit it is given), first under
 * normal load, then under floods of 9.2 MB uploads that load shedding must bound.
 */
const USAGE = 'DATABASE_URL=… WEBHOOK_SECRET=… npx tsx bench/pod-resources.ts --container NAME --url http://127.0.0.1:PORT'
const HELP = `${USAGE}
  --container NAME   the running container (podman) whose node process is measured
  --url URL          where that service listens (loopback)
  --seconds S        normal load: 10 senders of 94 KB books for S seconds (default 15)
  --waves N          then N floods of 40 concurrent 9.2 MB deliveries, 2 s apart (default 3)
  -h, --help         this text
DATABASE_URL: the service's database (the user 'pod-user' is created there); WEBHOOK_SECRET: its secret.
Progress on stderr; stdout is one JSON line per phase.`

let values
try {
  ({ values } = parseArgs({
    options: {
      container: { type: 'string' },
      url: { type: 'string' },
      seconds: { type: 'string', default: '15' },
      waves: { type: 'string', default: '3' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }))
} catch (err) {
  exitOnBadOption((err as Error).message, USAGE)
}
if (values.help) {
  process.stdout.write(`${HELP}\n`)
  process.exit(0)
}
const { DATABASE_URL: databaseUrl, WEBHOOK_SECRET: secret } = process.env
const seconds = Number(values.seconds)
const waves = Number(values.waves)
if (!values.container || !values.url) exitOnBadOption('--container and --url are required', USAGE)
if (!databaseUrl || !secret) exitOnBadOption('DATABASE_URL and WEBHOOK_SECRET must be set', USAGE)
if (!(seconds > 0) || !Number.isInteger(waves) || waves < 0) exitOnBadOption('--seconds: a positive number, --waves: a whole number', USAGE)

/** The container's node process as the host sees it: tini is its PID 1, node tini's child. */
function nodePid (container: string): number {
  let init: string
  try {
    init = execFileSync('podman', ['inspect', '--format', '{{.State.Pid}}', container], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
  } catch {
    process.stderr.write(`error: no running container ${container} (podman inspect failed)\n`)
    process.exit(1)
  }
  const [child] = readFileSync(`/proc/${init}/task/${init}/children`, 'utf8').trim().split(/\s+/)
  return Number(child || init)
}

const pid = nodePid(values.container!)
const endpoint = `${values.url}/api/webhooks/book-completion`
const rssMiB = () => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024
const report = (phase: string, figures: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ phase, ...figures })}\n`)
const tally = (statuses: number[]) => statuses.reduce<Record<number, number>>((counts, status) => ({ ...counts, [status]: (counts[status] ?? 0) + 1 }), {})

await adminQuery("INSERT INTO users (id) VALUES ('pod-user') ON CONFLICT DO NOTHING", databaseUrl)
const agent = new Agent({ connections: 64 })
const send = (body: Buffer, id: string) => deliver(endpoint, body, signedBytesHeaders(body, { id, secret }), agent)
report('idle', { rssMiB: Math.round(rssMiB()), peakRssMiB: Math.round(peakRssMb(pid)) })

process.stderr.write(`normal load: 10 senders of 94 KB books for ${seconds} s\n`)
const cpuBefore = processCpuMs(pid)
const started = Date.now()
const statuses: number[] = []
let sampledMiB = 0
const sampler = setInterval(() => { sampledMiB = Math.max(sampledMiB, rssMiB()) }, 100)
await Promise.all(Array.from({ length: 10 }, async (_, sender) => {
  while (Date.now() - started < seconds * 1000) {
    const body = Buffer.from(JSON.stringify(completedDelivery({ userId: 'pod-user', chapters: 10 })))
    statuses.push((await send(body, `msg_pod_${sender}_${statuses.length}`)).status)
  }
}))
clearInterval(sampler)
const elapsed = (Date.now() - started) / 1000
report('normal', {
  deliveries: statuses.length,
  perSecond: Math.round(statuses.length / elapsed),
  answers: tally(statuses),
  cores: +((processCpuMs(pid) - cpuBefore) / 1000 / elapsed).toFixed(2),
  rssMiB: Math.round(sampledMiB),
  peakRssMiB: Math.round(peakRssMb(pid)),
})

for (let wave = 1; wave <= waves; wave++) {
  process.stderr.write(`flood ${wave}/${waves}: 40 concurrent 9.2 MB deliveries\n`)
  const bodies = Array.from({ length: 40 }, () => Buffer.from(JSON.stringify(completedDelivery({ userId: 'pod-user', chapters: 100, paragraphs: 9 * 78 }))))
  const cpu = processCpuMs(pid)
  const begun = Date.now()
  const answers = await Promise.all(bodies.map((body, i) => send(body, `msg_pod_flood_${wave}_${i}_${begun}`)))
  const ms = Date.now() - begun
  report(`flood ${wave}`, {
    bodyMB: +(bodies[0]!.length / 1e6).toFixed(1),
    answers: tally(answers.map((answer) => answer.status)),
    ms,
    cores: +((processCpuMs(pid) - cpu) / ms).toFixed(2),
    rssMiB: Math.round(rssMiB()),
    peakRssMiB: Math.round(peakRssMb(pid)),
  })
  if (wave < waves) await new Promise((resolve) => setTimeout(resolve, 2000))
}
await agent.close()
