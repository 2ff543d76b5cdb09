import { connect, createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'

/** How the proxy treats the database while it is cut. */
export type Outage =
  | 'refused' // the database host is down: open connections reset, new ones refused
  | 'silent' // open connections reset; new ones open but nothing ever answers
  | 'frozen' // a network partition: open connections stay open but nothing gets through (until restored)

interface Pair { client: Socket, server: Socket }

/**
 * A loopback TCP proxy in front of Postgres that a test can cut and restore, to lose the database
 * under a running app without touching the shared server.
 */
export class TcpProxy {
  private server: Server
  private readonly sockets = new Set<Socket>()
  private readonly pairs = new Set<Pair>()
  private outage: Outage | undefined
  port = 0

  constructor (private readonly upstream: { host: string, port: number }) {
    this.server = this.createListener()
  }

  async start (): Promise<number> {
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    this.port = (this.server.address() as { port: number }).port
    return this.port
  }

  async cut (outage: Outage): Promise<void> {
    this.outage = outage
    if (outage === 'frozen') {
      for (const { client, server } of this.pairs) {
        client.unpipe(server).pause()
        server.unpipe(client).pause()
      }
      return
    }
    this.destroyAll()
    if (outage === 'refused') await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  /** Back to normal. After a partition the open connections carry on where they stopped. */
  async restore (): Promise<void> {
    const was = this.outage
    this.outage = undefined
    if (was === 'frozen') {
      for (const { client, server } of this.pairs) {
        client.pipe(server)
        server.pipe(client)
      }
      for (const socket of this.sockets) if (![...this.pairs].some((p) => p.client === socket || p.server === socket)) socket.destroy()
      return
    }
    this.destroyAll()
    if (was === 'refused') {
      this.server = this.createListener()
      this.server.listen(this.port, '127.0.0.1')
      await once(this.server, 'listening')
    }
  }

  async stop (): Promise<void> {
    this.destroyAll()
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private createListener (): Server {
    return createServer((client) => {
      this.track(client)
      if (this.outage) return // accepted, never forwarded, never answered
      const server = connect(this.upstream.port, this.upstream.host)
      this.track(server)
      const pair = { client, server }
      this.pairs.add(pair)
      client.pipe(server).pipe(client)
      const end = () => {
        this.pairs.delete(pair)
        client.destroy()
        server.destroy()
      }
      client.on('close', end)
      server.on('close', end)
    })
  }

  private track (socket: Socket): void {
    this.sockets.add(socket)
    socket.on('error', () => socket.destroy())
    socket.on('close', () => this.sockets.delete(socket))
  }

  private destroyAll (): void {
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
    this.pairs.clear()
  }
}
