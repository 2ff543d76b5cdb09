import { getHeapStatistics } from 'node:v8'
import { Type, type Static } from 'typebox'
import { Value } from 'typebox/value'

/** The environment variables of contract section 6, with their defaults. */
export const EnvSchema = Type.Object({
  ENVIRONMENT: Type.Union(
    [Type.Literal('development'), Type.Literal('staging'), Type.Literal('production')],
    { default: 'production' }
  ),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3001 }),
  HOST: Type.String({ minLength: 1, default: '0.0.0.0' }),
  DATABASE_URL: Type.Optional(Type.String({ minLength: 1 })),
  /** Named (server-side) prepared statements; false behind PgBouncer < 1.21 in transaction mode. */
  DATABASE_PREPARED_STATEMENTS: Type.Boolean({ default: true }),
  DATA_DIR: Type.String({ minLength: 1, default: './.data' }),
  WEBHOOK_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  WEBHOOK_TOLERANCE_SECONDS: Type.Integer({ minimum: 1, default: 300 }),
  DEFAULT_USER_ID: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  BODY_LIMIT_BYTES: Type.Integer({ minimum: 1024, default: 10 * 1024 * 1024 }),
  REQUEST_TIMEOUT_SECONDS: Type.Integer({ minimum: 1, default: 60 }),
  /** Request bodies (by Content-Length; chunked ones at BODY_LIMIT_BYTES) in flight at once; beyond, 503. */
  MAX_INFLIGHT_BODY_BYTES: Type.Integer({ minimum: 1024, default: 32 * 1024 * 1024 }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)),
    { default: 'info' }
  ),
  /** The API page (Swagger UI) at GET /docs; unset: on in development, off elsewhere. */
  API_DOCS: Type.Optional(Type.Boolean()),
})
type Env = Static<typeof EnvSchema>

/** The Standard Webhooks key size range starts at 24 bytes; anything shorter is a weak secret. */
export const MIN_SECRET_BYTES = 24

/**
 * When the process counts as short of memory or lagging (under-pressure; the measurement behind
 * each figure is in docs/PERFORMANCE.md, "Load shedding thresholds"). The event loop delay is
 * under-pressure's own: the mean delay over a sample interval, less its 10 ms resolution.
 */
const PRESSURE_LIMITS = {
  maxEventLoopDelayMs: 150,
  maxHeapUsedBytes: 512 * 1024 * 1024,
  maxRssBytes: 1024 * 1024 * 1024,
}

/**
 * The `--max-old-space-size` the process was started with (its command line, else NODE_OPTIONS), in
 * bytes. V8's heap_size_limit adds the young generation to it, and Node 24 reserves 192 MiB there
 * against Node 20's 48: the heap runs out at the old space's size (docs/PERFORMANCE.md).
 */
function maxOldSpaceBytes (): number | undefined {
  // NODE_OPTIONS may quote each option ("--max-old-space-size=256" "--import=…").
  const flags = [...(process.env.NODE_OPTIONS ?? '').split(/\s+/).map((flag) => flag.replace(/^"(.*)"$/, '$1')), ...process.execArgv]
  const given = flags.map((flag) => /^--max[-_]old[-_]space[-_]size=(\d+)$/.exec(flag)?.[1]).filter(Boolean).at(-1)
  return given ? Number(given) * 1024 * 1024 : undefined
}

/**
 * The limits for this process: a container's memory limit (cgroup), when lower, lowers the RSS
 * limit to 80 % of it, and the old space (`--max-old-space-size`, else V8's heap limit, which it
 * derives from the memory with a small young generation) the heap limit likewise.
 */
export function pressureLimits () {
  const constrained = process.constrainedMemory?.() || Infinity
  const heap = maxOldSpaceBytes() ?? getHeapStatistics().heap_size_limit
  return {
    maxEventLoopDelayMs: PRESSURE_LIMITS.maxEventLoopDelayMs,
    maxHeapUsedBytes: Math.floor(Math.min(PRESSURE_LIMITS.maxHeapUsedBytes, 0.8 * heap)),
    maxRssBytes: Math.floor(Math.min(PRESSURE_LIMITS.maxRssBytes, 0.8 * constrained)),
  }
}

export class ConfigError extends Error {
  constructor (readonly variable: string, message: string) {
    super(`${variable}: ${message}`)
    this.name = 'ConfigError'
  }
}

/**
 * One `WEBHOOK_SECRET` entry as HMAC key bytes: `whsec_<base64>` is decoded, anything else is
 * taken as its UTF-8 bytes (contract section 1).
 */
export function secretToKey (secret: string): Buffer {
  if (!secret.startsWith('whsec_')) return Buffer.from(secret, 'utf8')
  const encoded = secret.slice('whsec_'.length)
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded) || encoded.length % 4 !== 0) {
    throw new ConfigError('WEBHOOK_SECRET', 'a whsec_ secret must be followed by standard base64')
  }
  return Buffer.from(encoded, 'base64')
}

export function loadConfig (source: NodeJS.ProcessEnv = process.env) {
  // An empty variable (`DATABASE_URL=` in a .env or compose file) means "not set".
  const raw: Record<string, unknown> = {}
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = source[key]?.trim()
    if (value) raw[key] = value
  }
  const env = Value.Convert(EnvSchema, Value.Default(EnvSchema, raw))
  const [firstError] = Value.Errors(EnvSchema, env)
  if (firstError) {
    const variable = firstError.instancePath.replace(/^\//, '') || 'environment'
    throw new ConfigError(variable, `${firstError.message} (got ${JSON.stringify(raw[variable] ?? null)})`)
  }
  const checked = env as Env
  const development = checked.ENVIRONMENT === 'development'

  if (!development && !checked.DATABASE_URL) {
    throw new ConfigError('DATABASE_URL', `is required when ENVIRONMENT=${checked.ENVIRONMENT} (only development runs on the embedded database)`)
  }

  const secrets = checked.WEBHOOK_SECRET?.split(/\s+/).filter(Boolean) ?? []
  if (!development && secrets.length === 0) {
    throw new ConfigError('WEBHOOK_SECRET', `is required when ENVIRONMENT=${checked.ENVIRONMENT}`)
  }
  const webhookKeys = secrets.map(secretToKey)
  const weakSecrets = webhookKeys.filter((key) => key.length < MIN_SECRET_BYTES).length
  if (!development && weakSecrets > 0) {
    throw new ConfigError('WEBHOOK_SECRET', `${weakSecrets} of ${secrets.length} secret(s) is weak: each key must be at least ${MIN_SECRET_BYTES} bytes`)
  }

  if (checked.MAX_INFLIGHT_BODY_BYTES < checked.BODY_LIMIT_BYTES) {
    throw new ConfigError('MAX_INFLIGHT_BODY_BYTES', `must be at least BODY_LIMIT_BYTES (${checked.BODY_LIMIT_BYTES}), or the largest delivery could never be admitted`)
  }

  return {
    environment: checked.ENVIRONMENT,
    port: checked.PORT,
    host: checked.HOST,
    databaseUrl: checked.DATABASE_URL,
    preparedStatements: checked.DATABASE_PREPARED_STATEMENTS,
    dataDir: checked.DATA_DIR,
    /** HMAC keys, one per whitespace-separated secret (rotation). Empty only in development. */
    webhookKeys,
    weakSecrets,
    toleranceSeconds: checked.WEBHOOK_TOLERANCE_SECONDS,
    defaultUserId: checked.DEFAULT_USER_ID,
    bodyLimitBytes: checked.BODY_LIMIT_BYTES,
    /** Longest a client may take to send one whole request (a slow body is cut off with 408). */
    requestTimeoutMs: checked.REQUEST_TIMEOUT_SECONDS * 1000,
    logLevel: checked.LOG_LEVEL,
    apiDocs: checked.API_DOCS ?? development,
    /** When deliveries are answered 503 before their bodies are read (src/plugins/load-shedding.ts). */
    loadShedding: { ...pressureLimits(), maxInflightBodyBytes: checked.MAX_INFLIGHT_BODY_BYTES },
  }
}

export type Config = ReturnType<typeof loadConfig>
