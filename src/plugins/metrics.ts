import { readFile } from 'node:fs/promises'
import fp from 'fastify-plugin'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { BOOK_COMPLETION_PATH } from '../routes/book-completion.ts'
import { countPendingDeadLetters } from '../webhooks/dead-letters.ts'
import { SIGNATURE_FAILURES, type SignatureFailure } from '../webhooks/signature.ts'

const METRICS_PATH = '/metrics'

declare module 'fastify' {
  interface FastifyInstance {
    /** This app's Prometheus registry (one per app: tests build several apps in one process). */
    metrics: Registry
    /** What the webhook route reports to the metrics. */
    deliveryMetrics: { signatureRejected: (reason: SignatureFailure) => void }
  }
  interface FastifyRequest {
    /** Set by whoever answers a delivery before it reaches the route (overload, shutdown): counted as its outcome. */
    rejectionOutcome: string | undefined
  }
}

/** The pending dead letters are counted at most this often (a scrape every second costs one query per 5 s). */
export const DEAD_LETTERS_REFRESH_MS = 5_000
/** A scrape never waits longer than this for that count (the database may be away). */
const DEAD_LETTERS_COUNT_TIMEOUT_MS = 1_000

/** Seconds; deliveries take milliseconds, a slow database seconds, the statement timeout 15 s. */
const DURATION_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20]

/** The outcome of a delivery the route did not apply, from its status code. */
function rejectionOutcome (statusCode: number): string {
  if (statusCode === 401) return 'rejected_signature'
  if (statusCode === 503) return 'database_unavailable'
  if (statusCode >= 500) return 'error'
  return 'rejected'
}

/**
 * `GET /metrics` in the Prometheus text format: deliveries by outcome and status code, their
 * processing time, signature rejections by reason, pending dead letters, the database pool, the
 * build, and the process's default metrics.
 */
export default fp(async (app) => {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })

  const deliveries = new Counter({
    name: 'webhook_deliveries_total',
    help: 'Book-completion deliveries answered, by outcome and HTTP status code',
    labelNames: ['outcome', 'status_code'] as const,
    registers: [registry],
  })
  const duration = new Histogram({
    name: 'webhook_delivery_duration_seconds',
    help: 'Time from receiving a delivery to answering it, by outcome',
    labelNames: ['outcome'] as const,
    buckets: DURATION_BUCKETS_SECONDS,
    registers: [registry],
  })
  const poolGauge = (name: string, help: string, read: (stats: ReturnType<typeof app.db.poolStats>) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect () { this.set(read(app.db.poolStats())) },
    })
  poolGauge('webhook_db_pool_connections', 'Open database connections in the pool', (stats) => stats.total)
  poolGauge('webhook_db_pool_idle_connections', 'Idle database connections in the pool', (stats) => stats.idle)
  poolGauge('webhook_db_pool_waiting_clients', 'Queries waiting for a database connection', (stats) => stats.waiting)

  const signatureRejections = new Counter({
    name: 'webhook_signature_rejections_total',
    help: 'Deliveries refused with 401, by the reason the signature check gave',
    labelNames: ['reason'] as const,
    registers: [registry],
  })
  // Every reason is exported from the start (at 0), so a rate over it exists before the first one.
  for (const reason of SIGNATURE_FAILURES) signatureRejections.inc({ reason }, 0)

  let pendingDeadLetters = Number.NaN
  let countedAt = Number.NEGATIVE_INFINITY
  registry.registerMetric(new Gauge({
    name: 'webhook_dead_letters_pending',
    help: `Dead letters not replayed yet (NaN until first counted; counted at most every ${DEAD_LETTERS_REFRESH_MS / 1000} s)`,
    registers: [],
    async collect () {
      if (Date.now() - countedAt >= DEAD_LETTERS_REFRESH_MS) {
        countedAt = Date.now()
        // Kept as it was when the database does not answer in time: the scrape itself stays fast.
        const counted = await withTimeout(countPendingDeadLetters(app.db), DEAD_LETTERS_COUNT_TIMEOUT_MS).catch(() => undefined)
        if (counted !== undefined) pendingDeadLetters = counted
      }
      this.set(pendingDeadLetters)
    },
  }))

  const { version } = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  new Gauge({
    name: 'webhook_build_info',
    help: 'Always 1: the service version and the Node.js version it runs on, as labels',
    labelNames: ['version', 'node_version'] as const,
    registers: [registry],
  }).set({ version, node_version: process.version }, 1)

  app.decorate('metrics', registry)
  app.decorate('deliveryMetrics', {
    signatureRejected: (reason: SignatureFailure) => { signatureRejections.inc({ reason }) },
  })
  app.decorateRequest('rejectionOutcome', undefined)

  app.addHook('onResponse', async (request, reply) => {
    if (request.routeOptions.url !== BOOK_COMPLETION_PATH) return
    const outcome = request.deliveryOutcome ?? request.rejectionOutcome ?? rejectionOutcome(reply.statusCode)
    deliveries.inc({ outcome, status_code: String(reply.statusCode) })
    duration.observe({ outcome }, reply.elapsedTime / 1000)
  })

  app.get(METRICS_PATH, { schema: { hide: true } }, async (_request, reply) => {
    reply.type(registry.contentType)
    return registry.metrics()
  })
}, { name: 'metrics', dependencies: ['database'] })

function withTimeout<T> (work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error('timed out')), ms)
  })
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer))
}
