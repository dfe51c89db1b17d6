/**
 * A stand-in for Segment's HTTP Tracking API on 127.0.0.1 (`POST /v1/batch`), the receiving end of the
 * relay's 1Flow → Segment direction. It checks what Segment checks — HTTP Basic auth with a known write key,
 * a JSON body `{batch: [...]}`, 500 KB per request and 32 KB per event, every event with a `type`, a
 * `userId` or `anonymousId`, a `messageId`, and an `event` name for tracks — records every request and
 * every accepted event, and injects faults on request (status codes with Retry-After).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
// Core's own definition of Segment's wire, by path: core's tests depend on testkit, so testkit cannot depend on core.
import { checkSegmentEvent, SEGMENT_LIMITS } from '../../core/src/segment-contract'
import { FakeTimeoutError } from './fake-oneflow-api'

export interface SegmentFault {
  readonly status: number
  readonly retryAfter?: string
  readonly body?: string
  /** How many requests get this answer (default 1). */
  readonly times?: number
}

export interface SegmentRequest {
  readonly at: number
  readonly path: string
  /** The write key from Basic auth (undefined when there was none). */
  readonly writeKey: string | undefined
  readonly bytes: number
  readonly status: number
  readonly events: number
}

export interface SegmentAcceptedEvent {
  readonly at: number
  readonly writeKey: string
  readonly event: Record<string, unknown>
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

export class FakeSegmentApi {
  readonly requests: SegmentRequest[] = []
  readonly accepted: SegmentAcceptedEvent[] = []
  private readonly faults: Array<SegmentFault & { left: number }> = []
  private readonly writeKeys: Set<string>

  private constructor(
    private readonly server: Server,
    writeKeys: readonly string[]
  ) {
    this.writeKeys = new Set(writeKeys)
  }

  /** Starts on 127.0.0.1 (a free port unless given); accepts the listed write keys. */
  static async start(options: { writeKeys?: readonly string[]; port?: number } = {}): Promise<FakeSegmentApi> {
    const server = createServer()
    const api = new FakeSegmentApi(server, options.writeKeys ?? ['segment-write-key'])
    server.on('request', (req: IncomingMessage, res: ServerResponse) => void api.handle(req, res))
    await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve))
    return api
  }

  /** The base URL, e.g. http://127.0.0.1:40123 (what the relay's `segment.host` points at). */
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  /** The next `times` requests (default 1) get this answer instead of being accepted. */
  inject(fault: SegmentFault): void {
    this.faults.push({ ...fault, left: fault.times ?? 1 })
  }

  addWriteKey(key: string): void {
    this.writeKeys.add(key)
  }

  async waitFor(predicate: (accepted: readonly SegmentAcceptedEvent[]) => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!predicate(this.accepted)) {
      if (Date.now() > deadline)
        throw new FakeTimeoutError(
          `fake Segment: condition not met within ${timeoutMs} ms; ${this.accepted.length} events accepted, ${this.requests.length} requests`
        )
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const raw = Buffer.concat(chunks)
    const path = (req.url ?? '/').split('?')[0] as string
    const auth = req.headers.authorization
    const writeKey = auth?.startsWith('Basic ')
      ? Buffer.from(auth.slice(6), 'base64').toString('utf8').replace(/:.*$/s, '')
      : undefined
    const answer = (status: number, body: unknown, events = 0, headers: Record<string, string> = {}) => {
      this.requests.push({ at: Date.now(), path, writeKey, bytes: raw.length, status, events })
      res
        .writeHead(status, { 'content-type': 'application/json', ...headers })
        .end(typeof body === 'string' ? body : JSON.stringify(body))
    }
    if (req.method !== 'POST' || path !== '/v1/batch')
      return answer(404, { success: false, message: `no route ${req.method} ${path}` })
    const fault = this.faults[0]
    if (fault) {
      if (--fault.left <= 0) this.faults.shift()
      return answer(
        fault.status,
        fault.body ?? { success: false, message: `injected ${fault.status}` },
        0,
        fault.retryAfter ? { 'retry-after': fault.retryAfter } : {}
      )
    }
    if (writeKey === undefined || !this.writeKeys.has(writeKey))
      return answer(401, { success: false, message: 'Invalid write key' })
    if (req.headers['content-type']?.split(';')[0] !== 'application/json')
      return answer(400, { success: false, message: 'content-type must be application/json' })
    if (raw.length > SEGMENT_LIMITS.batchRequestBytes)
      return answer(400, { success: false, message: 'batch over 500 KB' })
    let body: unknown
    try {
      body = JSON.parse(raw.toString('utf8'))
    } catch {
      return answer(400, { success: false, message: 'invalid JSON' })
    }
    if (!isObject(body) || !Array.isArray(body.batch))
      return answer(400, { success: false, message: 'body must be {"batch": [...]}' })
    const events = body.batch as unknown[]
    for (const [i, e] of events.entries()) {
      // Stricter than Segment (which accepts a batch and drops its bad events later): whatever the relay sends must be good.
      const problem = !isObject(e)
        ? 'not an object'
        : Buffer.byteLength(JSON.stringify(e)) > SEGMENT_LIMITS.eventBytes
          ? 'over 32 KB'
          : typeof e.messageId !== 'string'
            ? 'no messageId'
            : checkSegmentEvent(e, e.type)?.message
      if (problem) return answer(400, { success: false, message: `batch[${i}]: ${problem}` })
    }
    for (const e of events) this.accepted.push({ at: Date.now(), writeKey, event: e as Record<string, unknown> })
    return answer(200, { success: true }, events.length)
  }
}
