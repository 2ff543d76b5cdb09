import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { Value } from 'typebox/value'
import { BOOK_EVENTS_CHANNEL, BookEventSchema, type BookEvent } from '../events/book-events.ts'
import { describeFailure } from './common.ts'

/** How the watcher's session shows in pg_stat_activity. */
export const WATCH_APPLICATION_NAME = 'book-completion-webhook:watch'

/** Waits between reconnection attempts: doubling from the first, capped at the last. */
const RECONNECT_DELAYS_MS = [500, 1_000, 2_000, 4_000, 8_000, 15_000, 30_000]
const CONNECT_TIMEOUT_MS = 5_000

interface WatchOptions {
  connectionString: string
  onEvent: (event: BookEvent) => void
  /** A notification on the channel that is not a book event (said, then skipped). */
  onIgnored: (payload: string) => void
  /** Connection news for the operator: listening, lost, reconnecting. */
  onStatus: (line: string) => void
  signal: AbortSignal
}

/**
 * LISTENs on `book_events` on a dedicated connection (a pool would hand LISTEN to any of its
 * connections and drop it on release) until `signal` aborts. The first connection failing is
 * thrown; a connection lost later is reopened with backoff, for as long as it takes.
 */
export async function watchBookEvents (options: WatchOptions): Promise<void> {
  let { lost } = await listen(options)
  options.onStatus(`listening on ${BOOK_EVENTS_CHANNEL}`)
  for (let attempt = 0; !options.signal.aborted;) {
    const reason = await lost
    if (options.signal.aborted) return
    const delay = RECONNECT_DELAYS_MS[Math.min(attempt, RECONNECT_DELAYS_MS.length - 1)]!
    options.onStatus(`${reason}: reconnecting in ${delay / 1000} s`)
    try {
      await sleep(delay, undefined, { signal: options.signal })
    } catch {
      return
    }
    try {
      ;({ lost } = await listen(options))
      attempt = 0
      options.onStatus(`listening on ${BOOK_EVENTS_CHANNEL} again (events sent while disconnected are not replayed: catch up from the tables, docs/DATA.md)`)
    } catch (err) {
      attempt++
      lost = Promise.resolve(`reconnection failed (${describeFailure(err)})`)
    }
  }
}

/** Connects and LISTENs; `lost` then says why the connection ended. */
async function listen (options: WatchOptions): Promise<{ lost: Promise<string> }> {
  const client = new pg.Client({
    connectionString: options.connectionString,
    application_name: WATCH_APPLICATION_NAME,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    // A silently dropped connection (no reset) is noticed by TCP keepalive, not by LISTEN.
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  })
  let ended: (reason: string) => void = () => {}
  const lost = new Promise<string>((resolve) => { ended = resolve })
  client.on('error', (err) => ended(`connection lost (${describeFailure(err)})`))
  client.on('end', () => ended('connection lost'))
  client.on('notification', (message) => {
    if (message.channel !== BOOK_EVENTS_CHANNEL) return
    const payload = message.payload ?? ''
    let parsed: unknown
    try {
      parsed = JSON.parse(payload)
    } catch {}
    if (Value.Check(BookEventSchema, parsed)) options.onEvent(parsed)
    else options.onIgnored(payload)
  })
  const stop = () => { client.end().catch(() => {}) }
  try {
    await client.connect()
    await client.query(`LISTEN ${client.escapeIdentifier(BOOK_EVENTS_CHANNEL)}`)
  } catch (err) {
    stop()
    throw err
  }
  options.signal.addEventListener('abort', stop, { once: true })
  return { lost: lost.finally(() => options.signal.removeEventListener('abort', stop)) }
}
