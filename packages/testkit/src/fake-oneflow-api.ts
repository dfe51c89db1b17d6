/**
 * A stand-in for 1Flow's HTTP API on 127.0.0.1 (the real one is unreachable from here). It enforces what the
 * contract in core promises — the api_key header, JSON bodies with exactly the documented/assumed fields,
 * 32 KB per request and 500 KB per batch — records every request and every accepted message, and injects
 * faults on request: status codes with Retry-After, latency, dropped connections.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { redactSecrets } from './wire'

export const FAKE_LIMITS = { maxRequestBytes: 32 * 1024, maxBatchRequestBytes: 500 * 1024 } as const

export type FakeFault =
  | {
      readonly kind: 'status'
      readonly status: number
      readonly retryAfter?: string
      readonly location?: string
      readonly body?: string
      readonly times?: number
      readonly path?: string
      /** Only requests whose body contains this text (e.g. one event's name inside a batch). */
      readonly bodyContains?: string
    }
  | { readonly kind: 'drop'; readonly times?: number; readonly path?: string; readonly bodyContains?: string }
  | {
      readonly kind: 'latency'
      readonly ms: number
      readonly times?: number
      readonly path?: string
      readonly bodyContains?: string
    }

export interface RecordedRequest {
  readonly at: number
  readonly method: string
  /** Path below the base path, e.g. `/track`. */
  readonly path: string
  readonly apiKey: string | undefined
  /** Request headers, lower-cased. */
  readonly headers: Readonly<Record<string, string>>
  readonly bytes: number
  readonly status: number | 'dropped'
  readonly error?: string
  readonly body?: unknown
}

export interface AcceptedMessage {
  readonly at: number
  /** The TCP port the request came from (which client sent it: a test can tell its processes' connections apart). */
  readonly fromPort: number | undefined
  readonly apiKey: string
  readonly via: '/identify' | '/track' | '/batch'
  readonly type: 'identify' | 'track'
  /** The fields as 1Flow received them (for batch items: without `type`). */
  readonly body: Record<string, unknown>
}

export interface FakeOneFlowOptions {
  /** Project API keys the fake accepts (default: ['test-project-key']). */
  readonly apiKeys?: readonly string[]
  readonly port?: number
  readonly basePath?: string
  /** Delay every response by this many ms. */
  readonly latencyMs?: number
}

const IDENTIFY_KEYS = new Set(['user_id', 'traits', 'timestamp'])
const TRACK_KEYS = new Set(['event', 'user_id', 'anonymous_id', 'properties', 'timestamp'])
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/

class Rejection {
  constructor(
    readonly status: number,
    readonly message: string
  ) {}
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function checkMessage(type: 'identify' | 'track', body: unknown, where: string): Record<string, unknown> {
  if (!isObject(body)) throw new Rejection(400, `${where}: body must be a JSON object`)
  const allowed = type === 'identify' ? IDENTIFY_KEYS : TRACK_KEYS
  for (const key of Object.keys(body)) {
    if (!allowed.has(key)) throw new Rejection(400, `${where}: unknown field "${key}"`)
    if (body[key] === null) throw new Rejection(400, `${where}: field "${key}" is null; omit fields without a value`)
  }
  const str = (k: string, required: boolean) => {
    const v = body[k]
    if (v === undefined) {
      if (required) throw new Rejection(400, `${where}: "${k}" is required`)
      return
    }
    if (typeof v !== 'string' || v === '') throw new Rejection(400, `${where}: "${k}" must be a non-empty string`)
  }
  if (type === 'identify') str('user_id', true)
  else {
    str('event', true)
    str('user_id', false)
    str('anonymous_id', false)
  }
  const obj = type === 'identify' ? 'traits' : 'properties'
  if (body[obj] !== undefined && !isObject(body[obj])) throw new Rejection(400, `${where}: "${obj}" must be an object`)
  if (body.timestamp !== undefined && (typeof body.timestamp !== 'string' || !ISO.test(body.timestamp))) {
    throw new Rejection(400, `${where}: "timestamp" must be an ISO-8601 date string`)
  }
  return body
}

/** A running fake of 1Flow's HTTP API. */
export class FakeOneFlowApi {
  readonly requests: RecordedRequest[] = []
  readonly accepted: AcceptedMessage[] = []
  /** Requests received but not yet answered (e.g. held by injected latency). */
  inFlight = 0
  /**
   * Bumped by reset(): a request counts in the generation it arrived in, so one that outlives its test
   * (held by latency, its client long gone) is answered but never recorded in the next test.
   */
  private generation = 0
  private faults: Array<FakeFault & { left: number }> = []
  private latencyMs: number
  private readonly apiKeys: Set<string>
  private readonly basePath: string

  private constructor(
    private readonly server: Server,
    options: FakeOneFlowOptions
  ) {
    this.apiKeys = new Set(options.apiKeys ?? ['test-project-key'])
    this.basePath = options.basePath ?? '/v1'
    this.latencyMs = options.latencyMs ?? 0
  }

  /** Starts a fake on 127.0.0.1 (a free port unless one is given). */
  static async start(options: FakeOneFlowOptions = {}): Promise<FakeOneFlowApi> {
    const server = createServer()
    server.keepAliveTimeout = 5000
    const fake = new FakeOneFlowApi(server, options)
    server.on('request', (req, res) => void fake.handle(req, res))
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(options.port ?? 0, '127.0.0.1', () => resolve())
    })
    return fake
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port
  }

  /** The base URL to configure as `apiBaseUrl`. */
  get url(): string {
    return `http://127.0.0.1:${this.port}${this.basePath}`
  }

  /** Queue a fault for the next matching requests (`times`, default 1). */
  inject(fault: FakeFault): void {
    this.faults.push({ ...fault, left: fault.times ?? 1 })
  }

  setLatency(ms: number): void {
    this.latencyMs = ms
  }

  addApiKey(key: string): void {
    this.apiKeys.add(key)
  }

  removeApiKey(key: string): void {
    this.apiKeys.delete(key)
  }

  reset(): void {
    this.generation++
    this.requests.length = 0
    this.accepted.length = 0
    this.faults = []
    this.latencyMs = 0
  }

  /** Most requests seen within any `windowMs` window (for checking rate limits at the receiving end). */
  maxRequestsInWindow(windowMs = 1000, since = 0): number {
    const times = this.requests.filter((r) => r.at >= since).map((r) => r.at)
    let best = 0
    let start = 0
    for (let end = 0; end < times.length; end++) {
      while ((times[end] as number) - (times[start] as number) >= windowMs) start++
      best = Math.max(best, end - start + 1)
    }
    return best
  }

  /** Resolves once `predicate` holds for the accepted messages; rejects after `timeoutMs`. */
  async waitFor(predicate: (accepted: readonly AcceptedMessage[]) => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!predicate(this.accepted)) {
      if (Date.now() > deadline) {
        throw new FakeTimeoutError(
          `fake 1Flow: condition not met within ${timeoutMs} ms (${this.accepted.length} messages accepted, ${this.requests.length} requests)`
        )
      }
      await new Promise((r) => setTimeout(r, 10))
    }
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private takeFault(
    faults: ReadonlyArray<FakeFault & { left: number }>,
    path: string,
    body: string
  ): (FakeFault & { left: number }) | undefined {
    const fault = faults.find(
      (f) =>
        f.left > 0 &&
        (f.path === undefined || f.path === path) &&
        (f.bodyContains === undefined || body.includes(f.bodyContains))
    )
    if (fault) fault.left--
    return fault
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // When the request arrived (what a rate limit at 1Flow would count), before its body is read.
    const at = Date.now()
    const generation = this.generation
    // The faults in force when it arrived: a reset while its body is still coming in must not turn an
    // injected refusal into a 200 that nobody records.
    const faults = this.faults
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    if (url.pathname.startsWith('/__fake/')) return this.control(url.pathname, req, res)
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const raw = Buffer.concat(chunks)
    const path = url.pathname.startsWith(this.basePath) ? url.pathname.slice(this.basePath.length) : url.pathname
    const apiKey = typeof req.headers.api_key === 'string' ? req.headers.api_key : undefined
    // A request from before a reset takes the faults of its own time, none of those injected since.
    const fault = this.takeFault(faults, path, raw.toString('utf8'))
    const latency = (fault?.kind === 'latency' ? fault.ms : 0) + this.latencyMs
    this.inFlight++
    if (latency > 0) await new Promise((r) => setTimeout(r, latency))
    this.inFlight--
    const current = generation === this.generation
    const record = (status: number | 'dropped', error?: string, body?: unknown) =>
      current &&
      this.requests.push({
        at,
        method: req.method ?? '',
        path,
        apiKey,
        headers: Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)])),
        bytes: raw.length,
        status,
        ...(error && { error }),
        ...(body !== undefined && { body })
      })
    if (fault?.kind === 'drop') {
      record('dropped')
      req.socket.destroy()
      return
    }
    if (fault?.kind === 'status') {
      record(fault.status, 'injected')
      const headers: Record<string, string> = { 'content-type': 'application/json' }
      if (fault.retryAfter !== undefined) headers['retry-after'] = fault.retryAfter
      if (fault.location !== undefined) headers.location = fault.location
      res.writeHead(fault.status, headers).end(fault.body ?? JSON.stringify({ error: `injected ${fault.status}` }))
      return
    }
    try {
      const messages = this.accept(req, path, apiKey, raw)
      record(200, undefined, JSON.parse(raw.toString('utf8')))
      if (current)
        for (const m of messages)
          this.accepted.push({
            at,
            fromPort: req.socket.remotePort,
            apiKey: apiKey as string,
            via: path as AcceptedMessage['via'],
            ...m
          })
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ success: true }))
    } catch (error) {
      if (!(error instanceof Rejection)) throw error
      record(error.status, error.message)
      res.writeHead(error.status, { 'content-type': 'application/json' }).end(JSON.stringify({ error: error.message }))
    }
  }

  private accept(
    req: IncomingMessage,
    path: string,
    apiKey: string | undefined,
    raw: Buffer
  ): Array<Pick<AcceptedMessage, 'type' | 'body'>> {
    if (req.method !== 'POST') throw new Rejection(405, 'only POST is supported')
    if (path !== '/identify' && path !== '/track' && path !== '/batch') throw new Rejection(404, `no endpoint ${path}`)
    if (apiKey === undefined || !this.apiKeys.has(apiKey)) throw new Rejection(401, 'missing or unknown api_key header')
    if (!String(req.headers['content-type'] ?? '').startsWith('application/json'))
      throw new Rejection(400, 'Content-Type must be application/json')
    const limit = path === '/batch' ? FAKE_LIMITS.maxBatchRequestBytes : FAKE_LIMITS.maxRequestBytes
    if (raw.length > limit) throw new Rejection(413, `request is ${raw.length} bytes; the limit is ${limit}`)
    let body: unknown
    try {
      body = JSON.parse(raw.toString('utf8'))
    } catch {
      throw new Rejection(400, 'body is not valid JSON')
    }
    if (path !== '/batch') {
      const type = path === '/identify' ? 'identify' : 'track'
      return [{ type, body: checkMessage(type, body, path) }]
    }
    if (!isObject(body) || Object.keys(body).length !== 1 || !Array.isArray(body.batch) || body.batch.length === 0) {
      throw new Rejection(400, '/batch: body must be {"batch": [ …at least one item… ]}')
    }
    return body.batch.map((item: unknown, i: number) => {
      if (!isObject(item) || (item.type !== 'identify' && item.type !== 'track')) {
        throw new Rejection(400, `/batch item ${i}: "type" must be "identify" or "track"`)
      }
      if (Buffer.byteLength(JSON.stringify(item)) > FAKE_LIMITS.maxRequestBytes)
        throw new Rejection(413, `/batch item ${i} is over 32 KB`)
      const { type, ...rest } = item
      return {
        type: type as 'identify' | 'track',
        body: checkMessage(type as 'identify' | 'track', rest, `/batch item ${i}`)
      }
    })
  }

  /** Control API for other processes (demo, multi-process tests): faults, records, reset. */
  private async control(pathname: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const send = (status: number, body: unknown): void =>
      void res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
    try {
      // Over HTTP, keys are redacted: the control API may be shown to people (the demo) and logged.
      if (pathname === '/__fake/accepted') return send(200, redactSecrets(this.accepted))
      if (pathname === '/__fake/requests') return send(200, redactSecrets(this.requests.map(({ body: _b, ...r }) => r)))
      if (pathname === '/__fake/reset' && req.method === 'POST') {
        this.reset()
        return send(200, { ok: true })
      }
      if (pathname === '/__fake/faults' && req.method === 'POST') {
        this.inject(JSON.parse(Buffer.concat(chunks).toString('utf8')) as FakeFault)
        return send(200, { ok: true })
      }
      if (pathname === '/__fake/latency' && req.method === 'POST') {
        this.setLatency(Number((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { ms: number }).ms))
        return send(200, { ok: true })
      }
      return send(404, { error: `unknown control path ${pathname}` })
    } catch {
      return send(400, { error: 'control body must be JSON' })
    }
  }
}

export class FakeTimeoutError extends Error {
  override readonly name = 'FakeTimeoutError'
}
