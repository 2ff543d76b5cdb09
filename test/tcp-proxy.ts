import { connect, createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'

/** How the proxy treats the database while it is cut. */
export type Outage =
  | 'refused' // the database host is down: connections are refused
  | 'silent' // the network drops packets: connections open but nothing ever answers

/**
 * A loopback TCP proxy in front of Postgres that a test can cut and restore, to lose the database
 * under a running app without touching the shared server.
 */
export class TcpProxy {
  private server: Server
  private readonly sockets = new Set<Socket>()
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

  /** Drops every open connection (as a dying server does) and treats new ones per `outage`. */
  async cut (outage: Outage): Promise<void> {
    this.outage = outage
    this.destroyAll()
    if (outage === 'refused') await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  async restore (): Promise<void> {
    const wasRefusing = this.outage === 'refused'
    this.outage = undefined
    this.destroyAll()
    if (wasRefusing) {
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
      if (this.outage === 'silent') return // accepted, never forwarded, never answered
      const server = connect(this.upstream.port, this.upstream.host)
      this.track(server)
      client.pipe(server).pipe(client)
      client.on('close', () => server.destroy())
      server.on('close', () => client.destroy())
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
  }
}
