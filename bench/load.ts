import { randomUUID } from 'node:crypto'
import autocannon from 'autocannon'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { sign } from '../src/webhooks/signature.ts'
import type { Mode } from './options.ts'

export interface Signed { body: Buffer, headers: Record<string, string> }

/**
 * `count` deliveries signed ahead of the run, so the load generator only sends bytes. `create`: a
 * new job each; `redeliver`: one job, a new webhook-id each; `retry`: one job, one webhook-id.
 */
export function presign (count: number, mode: Mode, key: Buffer, makeBody: (jobId: string) => Buffer, redeliverJobId: string): Signed[] {
  const timestamp = Math.floor(Date.now() / 1000)
  const signed: Signed[] = []
  const retryBody = makeBody(redeliverJobId)
  for (let i = 0; i < count; i++) {
    const body = mode === 'create' ? makeBody(`bench-${randomUUID()}`) : mode === 'redeliver' ? makeBody(redeliverJobId) : retryBody
    const id = mode === 'retry' ? `msg_retry_${redeliverJobId}` : `msg_${randomUUID()}`
    signed.push({
      body,
      headers: {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': String(timestamp),
        'webhook-signature': sign(key, id, timestamp, body),
      },
    })
  }
  return signed
}

export interface LoadResult {
  seconds: number
  requests: number
  ok: number
  non2xx: number
  errors: number
  timeouts: number
  overrun: number
  p50: number
  p99: number
  rps: number
}

/**
 * One autocannon run over pre-signed deliveries, each sent once; stops early if they run out.
 * The job id of every 200 goes into `acknowledged`.
 */
export async function drive (urls: string[], deliveries: Signed[], connections: number, seconds: number, acknowledged: Set<string>): Promise<LoadResult> {
  let next = 0
  let overrun = 0
  let last: Signed = deliveries[0]!
  // Without a callback autocannon returns its instance, which is also a promise of the result.
  const instance = autocannon({
    // autocannon takes several URLs (its types say one) and spreads the connections over them.
    url: (urls.length === 1 ? urls[0]! : urls) as string,
    connections,
    duration: seconds,
    method: 'POST',
    timeout: 60,
    requests: [{
      setupRequest: (request) => {
        const delivery = deliveries[next++]
        if (!delivery) {
          // Out of pre-signed deliveries: end the run; this one is a replay, counted apart.
          overrun++
          instance.stop()
          return { ...request, path: BOOK_COMPLETION_PATH, body: last.body, headers: last.headers }
        }
        last = delivery
        return { ...request, path: BOOK_COMPLETION_PATH, body: delivery.body, headers: delivery.headers }
      },
      onResponse: (status, body) => {
        if (status === 200) acknowledged.add((JSON.parse(body) as { jobId: string }).jobId)
      },
    }],
  }) as unknown as autocannon.Instance & Promise<autocannon.Result>
  const result = await instance
  const ok = result['2xx']
  return {
    seconds: result.duration,
    requests: result.requests.total,
    ok,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    overrun,
    p50: result.latency.p50,
    p99: result.latency.p99,
    rps: (ok - overrun) / result.duration,
  }
}
