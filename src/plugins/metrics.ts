import fp from 'fastify-plugin'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { BOOK_COMPLETION_PATH } from '../routes/book-completion.ts'

const METRICS_PATH = '/metrics'

declare module 'fastify' {
  interface FastifyInstance {
    /** This app's Prometheus registry (one per app: tests build several apps in one process). */
    metrics: Registry
  }
}

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
 * processing time, the database pool, and the process's default metrics.
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

  app.decorate('metrics', registry)

  app.addHook('onResponse', async (request, reply) => {
    if (request.routeOptions.url !== BOOK_COMPLETION_PATH) return
    const outcome = request.deliveryOutcome ?? rejectionOutcome(reply.statusCode)
    deliveries.inc({ outcome, status_code: String(reply.statusCode) })
    duration.observe({ outcome }, reply.elapsedTime / 1000)
  })

  app.get(METRICS_PATH, { schema: { hide: true } }, async (_request, reply) => {
    reply.type(registry.contentType)
    return registry.metrics()
  })
}, { name: 'metrics', dependencies: ['database'] })
