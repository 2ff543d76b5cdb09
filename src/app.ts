import Fastify, { LogController, type FastifyBaseLogger, type FastifyError } from 'fastify'
import helmet from '@fastify/helmet'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { randomUUID } from 'node:crypto'
import type { Config } from './config.ts'
import { classifyDatabaseError, databaseUnavailable, HttpError, type DatabaseFailure } from './errors.ts'
import type { DatabaseHandle } from './db/client.ts'
import { loggerOptions, stackFrames } from './logger.ts'
import databasePlugin from './plugins/database.ts'
import apiDocsPlugin from './plugins/api-docs.ts'
import openApiPlugin from './plugins/openapi.ts'
import gracefulClosePlugin from './plugins/graceful-close.ts'
import metricsPlugin from './plugins/metrics.ts'
import refusedUploadsPlugin from './plugins/refused-uploads.ts'
import bookCompletionRoutes from './routes/book-completion.ts'
import healthRoutes from './routes/health.ts'
import rootRoutes from './routes/root.ts'

interface AppOptions {
  /** A pino logger to use instead of one built from the config (tests capture logs with it). */
  logger?: FastifyBaseLogger
  /** An open database to use instead of opening one from the config (not closed by the app). */
  database?: DatabaseHandle
}

/**
 * Fastify's own 4xx errors, by code, with the contract's `error` names; `message`, where given,
 * replaces Fastify's with one the sender can act on.
 */
const FRAMEWORK_ERRORS: Record<string, { statusCode: number, error: string, message?: (config: Config) => string }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { statusCode: 415, error: 'unsupported_media_type' },
  FST_ERR_CTP_BODY_TOO_LARGE: {
    statusCode: 413,
    error: 'payload_too_large',
    message: (config) => `the body is larger than this service's limit of ${config.bodyLimitBytes} bytes (BODY_LIMIT_BYTES)`,
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { statusCode: 400, error: 'invalid_content_length' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { statusCode: 400, error: 'invalid_json' },
  FST_ERR_CTP_INVALID_JSON_BODY: { statusCode: 400, error: 'invalid_json' },
}

export async function buildApp (config: Config, options: AppOptions = {}) {
  const app = Fastify({
    ...(options.logger ? { loggerInstance: options.logger } : { logger: loggerOptions(config) }),
    // One line per delivery is written by the route itself.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimitBytes,
    // Opening the embedded database (PGlite: initdb and migrations) can take longer than
    // Fastify's 10 s default on a busy machine; a server database opens at once.
    pluginTimeout: 60_000,
    // Fastify disables Node's request timeout by default: a client trickling a body would hold its
    // socket and buffer forever. Node enforces it every connectionsCheckingInterval (default 30 s).
    requestTimeout: config.requestTimeoutMs,
    http: {
      headersTimeout: Math.min(60_000, config.requestTimeoutMs),
      connectionsCheckingInterval: Math.min(30_000, Math.ceil(config.requestTimeoutMs / 4)),
    },
    // src/plugins/graceful-close.ts answers requests that arrive while closing, in the contract's shape.
    return503OnClosing: false,
    requestIdHeader: 'webhook-id',
    genReqId: () => randomUUID(),
    ajv: { customOptions: { coerceTypes: false } },
  }).withTypeProvider<TypeBoxTypeProvider>()

  await app.register(helmet, {
    contentSecurityPolicy: {
      // Helmet's default CSP, minus upgrade-insecure-requests: over plain HTTP (npm run dev opened
      // from another machine, a container's address) it turns the /docs page's own script and
      // style requests into https ones that fail. It does nothing for the JSON routes.
      directives: { upgradeInsecureRequests: null },
    },
  })
  await app.register(gracefulClosePlugin)
  // After graceful-close: its onSend hook sets the Connection: close this one looks for.
  await app.register(refusedUploadsPlugin, { bodyLimitBytes: config.bodyLimitBytes })
  // Before the routes: it collects their schemas as they are added.
  await app.register(openApiPlugin)
  if (config.apiDocs) await app.register(apiDocsPlugin)
  await app.register(databasePlugin, { config, shared: options.database })
  await app.register(metricsPlugin)

  app.setErrorHandler((err: FastifyError, request, reply) => {
    const { statusCode, body, headers, database } = toResponse(err, config)
    if (statusCode >= 500) {
      // Never log the error itself: a failed query's message carries the SQL and the book text.
      // A 500 is a bug of ours: its stack frames say where.
      request.log.error({ errName: err.name, code: database?.code, failure: database?.failure, ...(statusCode === 500 ? { frames: stackFrames(err) } : {}) }, 'request failed')
    } else {
      request.log.info({ statusCode, error: body.error, message: body.message }, 'request rejected')
    }
    return reply.code(statusCode).headers(headers).send(body)
  })

  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({ error: 'not_found', message: `${request.method} ${request.url} is not a route of this service` }))

  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id)
  })

  await app.register(rootRoutes, { apiDocs: config.apiDocs })
  await app.register(healthRoutes)
  await app.register(bookCompletionRoutes, { config })
  return app
}

interface ErrorResponse {
  statusCode: number
  body: { error: string, message?: string }
  headers: Record<string, string>
  /** How a database error was classified, for the log line. */
  database?: { failure: DatabaseFailure, code: string | undefined }
}

/** Classifies an error once. 5xx only when a retry by the sender can help, or for our own bugs. */
function toResponse (err: FastifyError, config: Config): ErrorResponse {
  if (err instanceof HttpError) {
    return { statusCode: err.statusCode, body: { error: err.code, message: err.message }, headers: err.headers }
  }
  const framework = err.code ? FRAMEWORK_ERRORS[err.code] : undefined
  if (framework) return { statusCode: framework.statusCode, body: { error: framework.error, message: framework.message?.(config) ?? err.message }, headers: {} }

  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
    return { statusCode: err.statusCode, body: { error: 'bad_request', message: err.message }, headers: {} }
  }

  const database = classifyDatabaseError(err)
  if (database.failure === 'unavailable') {
    const unavailable = databaseUnavailable()
    return { statusCode: 503, body: { error: unavailable.code, message: unavailable.message }, headers: unavailable.headers, database }
  }
  if (database.failure === 'unstorable') {
    return { statusCode: 400, body: { error: 'invalid_payload', message: 'the payload holds text Postgres cannot store' }, headers: {}, database }
  }
  return { statusCode: 500, body: { error: 'internal_error', message: 'unexpected error; it has been logged' }, headers: {}, database }
}
