/**
 * The operator's endpoints as a fastify plugin: health (live, ready, summary), Prometheus metrics and the
 * optional live status page. No CORS here: nothing in a browser page from elsewhere may read them.
 */
import type { FastifyInstance } from 'fastify'
import type { Deliverer } from './deliverer'
import type { Metrics } from './metrics'
import type { QueueStats } from './queue/queue'
import type { Clock } from './rate-limiter'
import { STATUS_PAGE_HTML, type StatusTracker } from './status'

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
        alerts: deliverer.alerts()
      }
    })
  }
}
