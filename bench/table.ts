/**
 * Renders the JSON lines of `npm run bench` (bench/all.sh collects them) as the Markdown tables
 * of docs/PERFORMANCE.md, so no figure is copied by hand.
 */
import { readFileSync } from 'node:fs'
import { exitOnBadOption } from './options.ts'

const USAGE = 'npm run bench:table -- [FILE], the JSON lines of npm run bench:all, bench-results.jsonl by default'
if (process.argv[2] === '--help' || process.argv[2] === '-h') {
  process.stdout.write(`${USAGE}\n`)
  process.exit(0)
}
const file = process.argv[2] ?? 'bench-results.jsonl'

function readRuns (): Array<Record<string, unknown>> {
  let text
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    return exitOnBadOption(`cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, USAGE)
  }
  return text.split('\n').filter(Boolean).map((line, i) => {
    try {
      return JSON.parse(line) as Record<string, unknown>
    } catch {
      return exitOnBadOption(`${file}:${i + 1} is not a JSON line of npm run bench`, USAGE)
    }
  })
}

const runs = readRuns()

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
