import { parseArgs } from 'node:util'

/** Book sizes the benchmark knows: chapters and the target size of the whole body. */
export const SIZES = {
  '10k': { chapters: 1, bodyBytes: 10_000 },
  '94k': { chapters: 10, bodyBytes: 94_000 },
  '1m': { chapters: 100, bodyBytes: 1_000_000 },
  '10m': { chapters: 100, bodyBytes: 10_000_000 },
} as const
export type SizeName = keyof typeof SIZES

export const HELP = `npm run bench -- [options]
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
  --env K=V                 extra environment for the service (repeatable)
  -h, --help                this text`

export type Mode = 'create' | 'redeliver' | 'retry'
type FloorProtocol = 'prepared' | 'extended' | 'simple'
const MODES: readonly Mode[] = ['create', 'redeliver', 'retry']
const FLOOR_PROTOCOLS: readonly FloorProtocol[] = ['prepared', 'extended', 'simple']

export interface BenchOptions {
  mode: Mode
  size: SizeName
  bodyBytes: number
  chapters: number
  /** The body as Python's `json.dumps` default writes it: non-ASCII as `\u` escapes. */
  ascii: boolean
  connections: number
  durationSeconds: number
  warmupSeconds: number
  replicas: number
  pgbouncer: boolean
  socket: string | undefined
  floorProtocols: FloorProtocol[]
  profile: boolean
  profileDir: string | undefined
  devStart: boolean
  skipBuild: boolean
  serviceEnv: Record<string, string>
  /** The command line as the summary records it (`--skip-build` left out: it does not change a figure). */
  label: string
}

/** A bad option: `npm run bench` prints its message as one line and exits 2. */
export class UsageError extends Error {}

/** What every bench script does with a bad option: one line on stderr, with where to look, and exit 2. */
export function exitOnBadOption (message: string, usage: string): never {
  process.stderr.write(`error: ${message} (usage: ${usage})\n`)
  process.exit(2)
}

/** The options of `npm run bench`, checked; undefined for --help. Throws UsageError. */
export function parseOptions (argv: string[]): BenchOptions | undefined {
  let values
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
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
        help: { type: 'boolean', short: 'h', default: false },
      },
    }))
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  if (values.help) return undefined

  const mode = values.mode as Mode
  if (!MODES.includes(mode)) throw new UsageError(`--mode: one of ${MODES.join(', ')} (got ${JSON.stringify(values.mode)})`)
  if (!Object.hasOwn(SIZES, values.size)) throw new UsageError(`--size: one of ${Object.keys(SIZES).join(', ')} (got ${JSON.stringify(values.size)})`)
  const size = values.size as SizeName
  const floorProtocols = values['floor-protocol'].split(',') as FloorProtocol[]
  const unknownProtocol = floorProtocols.find((protocol) => !FLOOR_PROTOCOLS.includes(protocol))
  if (unknownProtocol !== undefined) {
    throw new UsageError(`--floor-protocol: ${FLOOR_PROTOCOLS.join(', ')}, comma-separated (got ${JSON.stringify(unknownProtocol)})`)
  }
  const serviceEnv: Record<string, string> = {}
  for (const pair of values.env) {
    const at = pair.indexOf('=')
    if (at < 1) throw new UsageError(`--env: NAME=VALUE (got ${JSON.stringify(pair)})`)
    serviceEnv[pair.slice(0, at)] = pair.slice(at + 1)
  }

  return {
    mode,
    size,
    bodyBytes: SIZES[size].bodyBytes,
    chapters: values.chapters === undefined ? SIZES[size].chapters : wholeNumber('--chapters', values.chapters),
    ascii: values.ascii,
    connections: wholeNumber('--connections', values.connections),
    durationSeconds: wholeNumber('--duration', values.duration),
    warmupSeconds: wholeNumber('--warmup', values.warmup),
    replicas: wholeNumber('--replicas', values.replicas),
    pgbouncer: values.pgbouncer,
    socket: values.socket,
    floorProtocols: values['skip-floor'] ? [] : floorProtocols,
    profile: values.profile,
    profileDir: values['profile-dir'],
    devStart: values['dev-start'],
    skipBuild: values['skip-build'],
    serviceEnv,
    label: argv.filter((arg) => arg !== '--skip-build').join(' ') || '(defaults)',
  }
}

/** pgbench -T and -c take whole numbers, and so does every count here. */
function wholeNumber (option: string, value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new UsageError(`${option}: a whole number of at least 1 (got ${JSON.stringify(value)})`)
  return Number(value)
}
