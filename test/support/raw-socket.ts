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

/** `allowHalfOpen`: keep sending after the server has ended its side (as a sender that does not read). */
export function openRaw (baseUrl: string, { allowHalfOpen = false } = {}): Promise<RawConnection> {
  const { hostname, port } = new URL(baseUrl)
  const socket = connect({ port: Number(port), host: hostname, allowHalfOpen })
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

/** What a sender that writes its whole request before reading got back. */
export interface WholeSendResult {
  /** Everything the server sent, read only once the whole request was written (or the write failed). */
  received: string
  /** The write's error code (EPIPE, ECONNRESET) when the connection broke while sending. */
  writeError: string | undefined
  /** The read's error code: ECONNRESET when a reset discarded what the server had sent. */
  readError: string | undefined
}

/**
 * Sends `head` then `body` and reads nothing until every byte is written, as Python's http.client
 * does: the socket is paused meanwhile, so an answer the server sent early waits in the kernel's
 * receive buffer, where a reset (the server closing while bytes still come) discards it.
 */
export function sendWholeThenRead (baseUrl: string, head: string, body: Buffer | Buffer[]): Promise<WholeSendResult> {
  const { hostname, port } = new URL(baseUrl)
  const socket = connect(Number(port), hostname)
  socket.pause()
  const chunks: Buffer[] = []
  let writeError: string | undefined
  let readError: string | undefined
  return new Promise((resolve) => {
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (writing) writeError ??= err.code ?? err.message
      else readError ??= err.code ?? err.message
    })
    socket.on('close', () => resolve({ received: Buffer.concat(chunks).toString('utf8'), writeError, readError }))
    let writing = true
    socket.once('connect', () => {
      socket.write(head)
      for (const part of Array.isArray(body) ? body : [body]) socket.write(part)
      // The callback of the last write runs once the kernel took every byte, or with the error that broke it.
      socket.write('', () => {
        writing = false
        socket.on('data', (chunk: Buffer) => chunks.push(chunk))
        socket.resume()
      })
    })
  })
}

/** `body` as HTTP/1.1 chunked frames of `frameBytes`, with the last (empty) chunk. */
export function chunkedFrames (body: Buffer, frameBytes = 64 * 1024): Buffer[] {
  const frames: Buffer[] = []
  for (let start = 0; start < body.length; start += frameBytes) {
    const part = body.subarray(start, start + frameBytes)
    frames.push(Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n'))
  }
  frames.push(Buffer.from('0\r\n\r\n'))
  return frames
}
