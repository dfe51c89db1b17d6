/**
 * A TCP proxy on 127.0.0.1 that can stop answering without refusing: what a database behind a dead network
 * path looks like (iptables is not available here). While frozen it accepts connections and reads what is sent,
 * but forwards nothing either way; thawing cuts the frozen connections (as a healed path's peers would find
 * them dead) and forwards again.
 */
import { createServer, connect, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'

export class FreezableProxy {
  private frozen = false
  private readonly pairs = new Set<[Socket, Socket | undefined]>()

  private constructor(
    private readonly server: Server,
    private readonly targetPort: number
  ) {}

  static async start(targetPort: number): Promise<FreezableProxy> {
    const server = createServer()
    const proxy = new FreezableProxy(server, targetPort)
    server.on('connection', (socket) => proxy.accept(socket))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return proxy
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port
  }

  freeze(): void {
    this.frozen = true
  }

  thaw(): void {
    this.frozen = false
    for (const [client, upstream] of this.pairs) {
      client.destroy()
      upstream?.destroy()
    }
    this.pairs.clear()
  }

  async close(): Promise<void> {
    this.thaw()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private accept(client: Socket): void {
    client.on('error', () => undefined)
    if (this.frozen) {
      // Accepted, never answered: a black hole.
      client.resume()
      this.pairs.add([client, undefined])
      return
    }
    const upstream = connect(this.targetPort, '127.0.0.1')
    upstream.on('error', () => client.destroy())
    const pair: [Socket, Socket] = [client, upstream]
    this.pairs.add(pair)
    client.on('close', () => {
      upstream.destroy()
      this.pairs.delete(pair)
    })
    upstream.on('close', () => client.destroy())
    client.on('data', (chunk) => {
      if (!this.frozen) upstream.write(chunk)
    })
    upstream.on('data', (chunk) => {
      if (!this.frozen) client.write(chunk)
    })
  }
}
