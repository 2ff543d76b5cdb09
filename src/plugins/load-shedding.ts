import underPressure from '@fastify/under-pressure'
import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import { answerUnavailable, OVERLOADED } from '../unavailable.ts'

/** How often under-pressure samples the event loop delay, the heap and the RSS. */
export const PRESSURE_SAMPLE_INTERVAL_MS = 500

/**
 * Contract section 7, overload: deliveries are answered 503 + Retry-After before their bodies are
 * read when the process is short of memory or its event loop lags (under-pressure, sampled), or
 * when admitting one more body would put more than MAX_INFLIGHT_BODY_BYTES of uploads in flight
 * (counted at once, from Content-Length: a burst arrives faster than any sample). Registered by
 * the webhook route in its own scope: /health, /ready and /metrics keep answering.
 */
export default fp<{ config: Config }>(async (app, { config }) => {
  const limits = config.loadShedding

  // The first samples measure the start-up itself (compiling the routes' schemas), not load.
  let delayCountsFrom = Number.POSITIVE_INFINITY
  app.addHook('onReady', async () => {
    delayCountsFrom = Date.now() + 2 * PRESSURE_SAMPLE_INTERVAL_MS
  })
  await app.register(underPressure, {
    maxEventLoopDelay: limits.maxEventLoopDelayMs,
    maxHeapUsedBytes: limits.maxHeapUsedBytes,
    maxRssBytes: limits.maxRssBytes,
    sampleInterval: PRESSURE_SAMPLE_INTERVAL_MS,
    pressureHandler: (request, reply, type, value) => {
      if (type === underPressure.TYPE_EVENT_LOOP_DELAY && Date.now() < delayCountsFrom) return
      // Infinity: the event loop did not turn once in the whole sample.
      request.log.warn({ pressure: type, value: Number.isFinite(value) ? Math.round(value!) : String(value) }, 'delivery refused: overloaded')
      answerUnavailable(request, reply, OVERLOADED)
    },
  })

  // A body whose length is not declared (chunked) may grow to the body limit: it is counted so.
  // One declared over the limit is answered 413 without being read: it takes nothing.
  let inflightBodyBytes = 0
  app.addHook('onRequest', async (request, reply) => {
    const declared = Number(request.headers['content-length'])
    if (declared > config.bodyLimitBytes) return
    const size = Number.isSafeInteger(declared) && declared >= 0 ? declared : config.bodyLimitBytes
    if (inflightBodyBytes + size > limits.maxInflightBodyBytes) {
      request.log.warn({ inflightBodyBytes, bodyBytes: size }, 'delivery refused: too many bodies in flight')
      answerUnavailable(request, reply, OVERLOADED)
      return reply
    }
    inflightBodyBytes += size
    // 'close': the response is sent, or the connection is gone (an aborted upload) — either way once.
    reply.raw.once('close', () => { inflightBodyBytes -= size })
  })
}, { name: 'load-shedding' })
