import { isAscii, isUtf8, transcode } from 'node:buffer'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import type { Config } from '../config.ts'
import { HttpError } from '../errors.ts'
import loadSheddingPlugin from '../plugins/load-shedding.ts'
import { applyDelivery, RecentJobs, type DeliveryOutcome } from '../webhooks/deliver.ts'
import { checkJsonStructure } from '../webhooks/json-structure.ts'
import { DeliverySchema, validateDelivery } from '../webhooks/payload.ts'
import { hasSignatureHeaders, SignatureError, verifySignature } from '../webhooks/signature.ts'

export const BOOK_COMPLETION_PATH = '/api/webhooks/book-completion'

export const DeliveryAcceptedSchema = Type.Object({
  success: Type.Literal(true),
  jobId: Type.String(),
  bookId: Type.Union([Type.String(), Type.Null()]),
  created: Type.Boolean(),
  chaptersCreated: Type.Integer(),
  wordCount: Type.Union([Type.Integer(), Type.Null()]),
  processingTimeMs: Type.Number(),
})

/** Documented here for OpenAPI; checked by the content-type parser on the raw bytes, before any schema. */
const SignatureHeadersSchema = Type.Object({
  'webhook-id': Type.Optional(Type.String({ description: 'Unique id of this delivery; the same on every retry of it' })),
  'webhook-timestamp': Type.Optional(Type.String({ description: 'Unix seconds of this send (not of the event)' })),
  'webhook-signature': Type.Optional(Type.String({ description: 'Space-separated `v1,<base64 HMAC-SHA256>` entries' })),
})

export const ErrorSchema = Type.Object({
  error: Type.String(),
  message: Type.Optional(Type.String()),
})

declare module 'fastify' {
  interface FastifyRequest {
    /** False for a development request that carried no signature headers. */
    signatureVerified: boolean
    /** What the delivery did, once applied (metrics count deliveries by it). */
    deliveryOutcome: DeliveryOutcome | undefined
  }
}

/**
 * The one endpoint of contract sections 1–4: content type, raw-body signature check, schema, then
 * the delivery transaction. The raw-body parser is scoped to this plugin; other routes keep Fastify's.
 */
const bookCompletionRoutes: FastifyPluginAsyncTypebox<{ config: Config }> = async (app, { config }) => {
  const development = config.environment === 'development'
  const recentJobs = new RecentJobs()
  await app.register(loadSheddingPlugin, { config })

  app.decorateRequest('signatureVerified', false)
  app.decorateRequest('deliveryOutcome', undefined)

  // Checked before the body is read, so a wrong type costs nothing (and a missing one is 415 too).
  app.addHook('onRequest', async (request) => {
    const mediaType = request.headers['content-type']?.split(';', 1)[0]?.trim().toLowerCase()
    if (mediaType !== 'application/json') {
      throw new HttpError(415, 'unsupported_media_type', 'Content-Type must be application/json')
    }
  })

  app.removeAllContentTypeParsers()
  // The body, in order: signature on the raw bytes, UTF-8, structure (duplicate keys, nesting,
  // prototype-poisoning keys), one decode and parse, then the one validation of a delivery.
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body: Buffer, done) => {
    try {
      authenticate(request, body)
      // The signature library world turns invalid UTF-8 into U+FFFD; we refuse it outright.
      if (!isUtf8(body)) throw new HttpError(400, 'invalid_encoding', 'the body is not valid UTF-8')
      const structureError = checkJsonStructure(body)
      if (structureError) throw structureError
      done(null, validateDelivery(parseJson(body), body))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  function authenticate (request: FastifyRequest, body: Buffer): void {
    if (development && !hasSignatureHeaders(request.headers)) return
    try {
      verifySignature(request.headers, body, {
        keys: config.webhookKeys,
        toleranceSeconds: config.toleranceSeconds,
        nowSeconds: Math.floor(Date.now() / 1000),
      })
    } catch (err) {
      if (err instanceof SignatureError) {
        app.deliveryMetrics.signatureRejected(err.reason)
        request.log.info({ reason: err.reason, hint: SIGNATURE_HINTS[err.reason] }, 'webhook signature rejected')
        throw new HttpError(401, 'invalid_signature', err.message)
      }
      throw err
    }
    request.signatureVerified = true
  }

  app.post(BOOK_COMPLETION_PATH, {
    schema: {
      summary: 'Deliver a finished (or failed) book',
      description: 'Standard Webhooks: the three webhook-* headers sign `<webhook-id>.<webhook-timestamp>.<raw body>` ' +
        '(HMAC-SHA256 with WEBHOOK_SECRET); required outside development. Retry 5xx (503 carries Retry-After), timeouts and ' +
        'connection errors with the same webhook-id; never retry a 4xx. 422: the delivery was kept as a dead letter.',
      tags: ['webhooks'],
      headers: SignatureHeadersSchema,
      body: DeliverySchema,
      response: {
        200: DeliveryAcceptedSchema,
        '4xx': ErrorSchema,
        '5xx': ErrorSchema,
      },
    },
    // The schemas document the route; the body parser has already validated the body with
    // validateDelivery, and the signature check has read the headers.
    validatorCompiler: () => () => true,
  }, async (request, reply) => {
    const result = await applyDelivery(app.db, request.body, {
      webhookId: request.headers['webhook-id'] as string | undefined,
      defaultUserId: config.defaultUserId,
      fallbackToOldestUser: development,
      recentJobs,
      log: request.log,
    })
    request.deliveryOutcome = result.outcome
    const processingTimeMs = Math.round(reply.elapsedTime * 100) / 100
    request.log.info({
      jobId: result.jobId,
      outcome: result.outcome,
      chapters: result.chaptersCreated,
      processingTimeMs,
      verified: request.signatureVerified,
    }, 'delivery')

    if (result.outcome === 'dead_lettered') {
      return reply.code(422).send({ error: 'unprocessable_delivery', message: result.reason })
    }
    const { jobId, bookId, created, chaptersCreated, wordCount } = result
    return { success: true as const, jobId, bookId, created, chaptersCreated, wordCount, processingTimeMs }
  })
}

/**
 * One decode and a plain JSON.parse: the structure check has refused the prototype-poisoning
 * keys. On Node 20, ICU's transcode decodes non-ASCII UTF-8 in about 60 % of `toString`'s time
 * (docs/PERFORMANCE.md); both give the same string for the valid UTF-8 checked before.
 */
function parseJson (body: Buffer): unknown {
  const text = isAscii(body) ? body.toString('latin1') : transcode(body, 'utf8', 'utf16le').toString('utf16le')
  try {
    return JSON.parse(text)
  } catch {
    // The parser's own message quotes the body: never echoed.
    throw new HttpError(400, 'invalid_json', 'the body is not valid JSON')
  }
}

/** Said in the 401 log line: senders most often paste the secret in the wrong form. */
const SIGNATURE_HINTS: Record<string, string> = {
  missing_headers: 'send webhook-id, webhook-timestamp and webhook-signature (Standard Webhooks)',
  invalid_timestamp: 'webhook-timestamp must be the Unix time in seconds of this send',
  timestamp_too_old: 'webhook-timestamp must be the time of sending (not of the event); check the sender clock',
  timestamp_too_new: 'check the sender clock',
  no_matching_signature: 'sign "<webhook-id>.<webhook-timestamp>.<raw body>" with the whole WEBHOOK_SECRET ' +
    '(whsec_<base64> is decoded; any other value is used as UTF-8 bytes); the header is "v1,<base64 HMAC-SHA256>"',
}

export default bookCompletionRoutes
