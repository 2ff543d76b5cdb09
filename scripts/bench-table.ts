/**
 * Renders the JSON lines of `npm run bench` (bench-all.sh collects them) as the Markdown tables
 * of docs/PERFORMANCE.md, so no figure is copied by hand.
 */
import { readFileSync } from 'node:fs'

const file = process.argv[2] ?? 'bench-results.jsonl'
const runs = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>)

interface Floor { protocol: string, tps: number, backendsCpuMsPerTx: number, ratio: number, postgresCpuVsFloor: number }

/** One figure per floor: `prepared 0.77 · simple 1.43`. */
function floors (run: Record<string, unknown>, pick: (floor: Floor) => number): string | null {
  const list = (run.floors as Floor[] | undefined) ?? []
  return list.length === 0 ? null : list.map((floor) => `${floor.protocol} ${pick(floor)}`).join(' · ')
}

const cell = (value: unknown) => value === null || value === undefined ? '–' : String(value)
const columns: Array<[string, (run: Record<string, unknown>) => unknown]> = [
  ['run (`npm run bench -- …`)', (run) => `\`${run.args}\``],
  ['book', (run) => `${run.chapters} ch, ${Math.round(Number(run.bodyBytes) / 1000)} KB`],
  ['deliveries/s', (run) => run.rps],
  ['p50 / p99 ms', (run) => `${run.p50Ms} / ${run.p99Ms}`],
  ['non-2xx / errors', (run) => `${run.non2xx} / ${run.errors}`],
  ['service CPU ms/delivery', (run) => run.serviceCpuMsPerDelivery],
  ['Postgres CPU ms/delivery (backends / server)', (run) => `${run.postgresBackendsCpuMsPerDelivery} / ${run.postgresCpuMsPerDelivery}`],
  ['floor tx/s', (run) => floors(run, (floor) => floor.tps)],
  ['floor Postgres CPU ms/tx (backends)', (run) => floors(run, (floor) => floor.backendsCpuMsPerTx)],
  ['ratio', (run) => floors(run, (floor) => floor.ratio)],
  ['Postgres vs floor', (run) => floors(run, (floor) => floor.postgresCpuVsFloor)],
  ['RSS peak MB', (run) => run.rssPeakMb],
  ['start ms (prod / dev first, again)', (run) => `${run.productionStartMs} / ${cell(run.devStartMs)}, ${cell(run.devRestartMs)}`],
  ['exactly once', (run) => run.integrity ? 'yes' : '**NO**'],
  ['load avg (start → end)', (run) => {
    const load = run.load as { start: string, end: string }
    return `${load.start.split(' ')[0]} → ${load.end.split(' ')[0]}`
  }],
]

process.stdout.write(`| ${columns.map(([name]) => name).join(' | ')} |\n`)
process.stdout.write(`|${columns.map(() => ' --- ').join('|')}|\n`)
for (const run of runs) process.stdout.write(`| ${columns.map(([, value]) => cell(value(run))).join(' | ')} |\n`)
