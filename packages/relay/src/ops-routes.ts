/**
 * The operator's endpoints as a fastify plugin: health (live, ready, summary), Prometheus metrics and the
 * optional live status page with its preview. No CORS here: nothing in a browser page from elsewhere may read them.
 */
import type { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { SourceConfig } from './config'
import type { Deliverer } from './deliverer'
import type { Metrics } from './metrics'
import { parsePreviewInput, PreviewInputError, previewEvents } from './preview'
import type { QueueStats } from './queue/queue'
import type { Clock } from './rate-limiter'
import { BodyError, BUSY, declaredLength, hasBody, readBody, reserveBody, type BodyBudget } from './request-body'
import { STATUS_PAGE_HTML, type StatusTracker } from './status'

/** The most the status page's preview reads: a few dozen pasted events, never a bulk tool. */
export const PREVIEW_BODY_LIMIT = 64 * 1024
export const PREVIEW_MAX_EVENTS = 100
/**
 * The header the status page's own requests carry. A page elsewhere can POST text/plain without asking, but not
 * with this header: that takes a CORS preflight, which the relay never grants here.
 */
export const PREVIEW_HEADER = 'x-oneflow-preview'

/**
 * The queue's figures, read at most once per `maxAgeMs` however many clients poll /health, /metrics or the status
 * page (one read in flight at a time): anonymous polling never multiplies the queue's work.
 */
export class StatsCache {
  private latest: { at: number; stats: QueueStats } | undefined
  private reading: Promise<QueueStats> | undefined

  constructor(
    private readonly read: () => Promise<QueueStats>,
    private readonly maxAgeMs = 1_000,
    private readonly now: () => number = () => performance.now()
  ) {}

  get(): Promise<QueueStats> {
    if (this.latest && this.now() - this.latest.at < this.maxAgeMs) return Promise.resolve(this.latest.stats)
    this.reading ??= this.read().then(
      (stats) => {
        this.latest = { at: this.now(), stats }
        this.reading = undefined
        return stats
      },
      (error: unknown) => {
        this.reading = undefined
        throw error
      }
    )
    return this.reading
  }
}

export interface OpsRouteDeps {
  readonly figures: StatsCache
  readonly deliverer: Deliverer
  readonly metrics: Metrics
  readonly status: StatusTracker
  readonly clock: Clock
  readonly statusPage: boolean
  /** The sources the status page's preview offers; only their names and mappings are read. */
  readonly sources: readonly SourceConfig[]
  /** The relay's memory budget for request bodies, which the preview's bodies count against too. */
  readonly bodies: BodyBudget
  /** Why the relay is not ready for traffic (shutting down, queue over its cap or not writable), or undefined. */
  notReady(): Promise<string | undefined>
  /** The shutdown state, for /health. */
  shuttingDown(): boolean
}

/** Queue figures as the metrics gauges show them. */
export function setQueueGauges(metrics: Metrics, stats: QueueStats): void {
  metrics.queueDepth.set({ state: 'pending' }, stats.pending - stats.retrying)
  metrics.queueDepth.set({ state: 'retry' }, stats.retrying)
  metrics.queueDepth.set({ state: 'leased' }, stats.leased)
  metrics.queueDepth.set({ state: 'dead' }, stats.dead)
  metrics.oldestAge.set(stats.oldestAgeMs / 1000)
}

export async function opsRoutes(app: FastifyInstance, deps: OpsRouteDeps): Promise<void> {
  const { figures, deliverer, metrics, status, clock } = deps

  app.get('/health/live', async () => ({ status: 'ok' }))
  app.get('/health/ready', async (_req, reply) => {
    const problem = await deps.notReady()
    // Never unready because of 1Flow: absorbing 1Flow outages is what the relay is for.
    return reply
      .code(problem ? 503 : 200)
      .send({ status: problem ? 'not ready' : 'ready', ...(problem && { problem }), alerts: deliverer.alerts() })
  })
  // One name per lane everywhere (metrics' `project` label, the status page, /health): the source's name for a
  // 1Flow project, `segment:<source>` for survey responses — never the internal id (a hash of the project key).
  const labels = () => new Map(deliverer.laneStatus().map((l) => [l.laneId, l.lane]))
  const named = (stats: QueueStats): QueueStats => {
    const label = labels()
    return {
      ...stats,
      lanes: Object.fromEntries(Object.entries(stats.lanes).map(([id, n]) => [label.get(id) ?? id, n]))
    }
  }
  app.get('/health', async () => ({
    status: deps.shuttingDown() ? 'shutting down' : 'ok',
    alerts: deliverer.alerts(),
    queue: named(await figures.get())
  }))
  app.get('/metrics', async (_req, reply) => {
    setQueueGauges(metrics, await figures.get())
    return reply.header('content-type', metrics.registry.contentType).send(await metrics.registry.metrics())
  })

  if (deps.statusPage) {
    app.get('/status', async (_req, reply) =>
      reply.header('content-type', 'text/html; charset=utf-8').send(STATUS_PAGE_HTML)
    )
    app.get('/status/data', async () => {
      const history = status.history()
      const stats = await figures.get()
      return {
        time: new Date(clock.now()).toISOString(),
        queue: named(stats),
        lanes: deliverer.laneStatus().map(({ laneId, ...lane }) => ({
          ...lane,
          waiting: stats.lanes[laneId] ?? 0,
          ...status.laneFigures(lane.lane)
        })),
        totals: status.totals,
        // The last complete second.
        rate: { requestsPerSecond: history.at(-2)?.requests ?? 0, limit: deliverer.requestLimit() },
        history,
        errors: status.lastErrors(),
        alerts: deliverer.alerts(),
        sources: deps.sources.map((s) => s.name)
      }
    })
    await app.register(previewRoute, deps)
  }
}

/**
 * `POST /status/preview?source=<name>`: what `oneflow-relay preview` prints for the pasted events, for the status
 * page. It reads the same input, answers the same results, and like the CLI sends nothing, stores nothing and
 * shows no credential. Its own scope: its body parser and errors are no other route's.
 */
async function previewRoute(app: FastifyInstance, deps: OpsRouteDeps): Promise<void> {
  const limitText = `${PREVIEW_BODY_LIMIT / 1024} KB`
  const tooLarge = {
    error: `the preview takes at most ${limitText} of events; paste fewer`,
    code: 'request_too_large',
    limit: PREVIEW_BODY_LIMIT
  }
  const names = () => deps.sources.map((s) => s.name).join(', ')
  const sourceOf = (req: FastifyRequest) => {
    const name = (req.query as { source?: unknown }).source
    return name === undefined ? deps.sources[0] : deps.sources.find((s) => s.name === name)
  }
  /** An answer before the body is read: a connection with a body still to come is closed rather than drained. */
  const refuse = (req: FastifyRequest, reply: FastifyReply, status: number, body: unknown) => {
    if (hasBody(req)) reply.header('connection', 'close')
    return reply.code(status).send(body)
  }

  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', async (req: FastifyRequest, payload: Readable) => {
    const { bytes } = await readBody(payload, {
      contentEncoding: req.headers['content-encoding'],
      limit: PREVIEW_BODY_LIMIT,
      what: limitText
    })
    return bytes.toString('utf8')
  })
  app.setErrorHandler((error: Error & { code?: string; statusCode?: number }, req, reply) => {
    if (
      error.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ||
      (error instanceof BodyError && error.code === 'request_too_large')
    )
      return reply.header('connection', 'close').code(413).send(tooLarge)
    if (error instanceof BodyError) return reply.code(error.statusCode).send({ error: error.message, code: error.code })
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500)
      return reply.code(400).send({ error: error.message, code: 'bad_request' })
    req.log.error({ err: error }, 'status page preview failed')
    return reply.code(500).send({ error: 'internal error', code: 'internal' })
  })

  // Who may ask, for which source, how much: all decided before a byte of the body is read.
  const guard = async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.headers[PREVIEW_HEADER] !== '1')
      return refuse(req, reply, 403, {
        error: `a preview needs the header "${PREVIEW_HEADER}: 1", as the status page sends it (so that no page elsewhere can use it)`,
        code: 'forbidden'
      })
    if (!sourceOf(req))
      return refuse(req, reply, 400, {
        error: `no source named ${JSON.stringify((req.query as { source?: unknown }).source)}; the sources are: ${names()}`,
        code: 'unknown_source',
        sources: deps.sources.map((s) => s.name)
      })
    if ((declaredLength(req) ?? 0) > PREVIEW_BODY_LIMIT) return refuse(req, reply, 413, tooLarge)
    if (!reserveBody(deps.bodies, req, reply, PREVIEW_BODY_LIMIT))
      return refuse(req, reply.header('retry-after', '5'), 503, BUSY)
  }

  app.post('/status/preview', { bodyLimit: PREVIEW_BODY_LIMIT, onRequest: guard }, async (req, reply) => {
    const source = sourceOf(req) as SourceConfig
    let events: unknown[]
    try {
      events = parsePreviewInput(typeof req.body === 'string' ? req.body : '')
    } catch (error) {
      if (!(error instanceof PreviewInputError)) throw error
      const { line, column } = error
      return reply.code(400).send({
        error: error.message,
        ...(line !== undefined ? { code: 'invalid_json', line, column } : { code: 'invalid_input' })
      })
    }
    if (events.length > PREVIEW_MAX_EVENTS)
      return reply.code(400).send({
        error: `${events.length} events: the preview takes at most ${PREVIEW_MAX_EVENTS} at once`,
        code: 'too_many_events',
        limit: PREVIEW_MAX_EVENTS
      })
    const results = previewEvents(events, source)
    return {
      source: source.name,
      events: results.length,
      sent: results.filter((r) => r.sent.length > 0).length,
      results
    }
  })
}
