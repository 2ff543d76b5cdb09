import { connect, type Socket } from 'node:net'

/** A hand-driven HTTP/1.1 connection: for what a normal client cannot send (slow, oversized, endless). */
interface RawConnection {
  socket: Socket
  /** Everything the server sent so far. */
  received: () => string
  /** Resolves when the server has sent a status line (with it), or the socket closed (undefined). */
  status: Promise<number | undefined>
  closed: Promise<number>
  /** Bytes of body written so far. */
  sent: () => number
  write: (data: string | Buffer) => Promise<void>
}

export function openRaw (baseUrl: string): Promise<RawConnection> {
  const { hostname, port } = new URL(baseUrl)
  const socket = connect(Number(port), hostname)
  let data = ''
  let written = 0
  const opened = Date.now()
  let resolveStatus: (status: number | undefined) => void
  const status = new Promise<number | undefined>((resolve) => { resolveStatus = resolve })
  const closed = new Promise<number>((resolve) => socket.on('close', () => {
    resolveStatus(undefined)
    resolve(Date.now() - opened)
  }))
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => {
    data += chunk
    const match = /^HTTP\/1\.1 (\d{3})/.exec(data)
    if (match) resolveStatus(Number(match[1]))
  })
  socket.on('error', () => {})
  const write = (chunk: string | Buffer) => new Promise<void>((resolve) => {
    if (socket.destroyed) return resolve()
    written += chunk.length
    if (socket.write(chunk)) return resolve()
    // A server that stops reading never drains: give up when it closes.
    const done = () => { socket.off('drain', done); socket.off('close', done); resolve() }
    socket.once('drain', done)
    socket.once('close', done)
  })
  return new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.once('connect', () => resolve({ socket, received: () => data, status, closed, sent: () => written, write }))
  })
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
