/**
 * The relay's composition and lifecycle: the queue, the deliverer, and three fastify plugins — ingest (Segment's
 * HTTP Tracking API), 1Flow's survey-response webhook, and the ops endpoints — sharing one notion of "the relay
 * cannot take events now".
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { SEGMENT_LIMITS } from '@oneflow-seg/core'
import { ConfigError, type RelayConfig } from './config'
import { Deliverer } from './deliverer'
import { ingestRoutes, type Unavailable } from './ingest-routes'
import { createLogger } from './logger'
import { createMetrics, type Metrics } from './metrics'
import { opsRoutes, setQueueGauges } from './ops-routes'
import type { NewEvent, Queue } from './queue/queue'
import { PgQueue } from './queue/pg-queue'
import { SqliteQueue } from './queue/sqlite-queue'
import { systemClock, type Clock } from './rate-limiter'
import { StatusTracker } from './status'
import { WEBHOOK_BODY_LIMIT, webhookRoutes } from './webhook-routes'

export interface RelayOptions {
  readonly logger?: Logger
  readonly clock?: Clock
  readonly fetch?: typeof fetch
  readonly random?: () => number
  /** Use this queue instead of the one `config.queue` names (tests). */
  readonly queue?: Queue
}

export interface Relay {
  readonly app: FastifyInstance
  readonly queue: Queue
  readonly metrics: Metrics
  readonly deliverer: Deliverer
  readonly config: RelayConfig
  /** Starts delivery and listens; resolves with the base URL, e.g. http://127.0.0.1:8787. */
  start(): Promise<string>
  /** Stops accepting, finishes deliveries in flight, closes the queue. Nothing acknowledged is lost. */
  stop(): Promise<void>
}

/** Opens the queue a config names. */
export async function openQueue(config: RelayConfig): Promise<Queue> {
  if (config.queue.startsWith('sqlite:')) return new SqliteQueue(config.queue.slice('sqlite:'.length))
  try {
    return await PgQueue.open(config.queue)
  } catch (error) {
    // The URL may carry a password: name the problem, not the URL.
    throw new ConfigError([{ key: 'queue', message: `cannot open the PostgreSQL queue: ${(error as Error).message}` }])
  }
}

const DISK_CHECK_MS = 1000
const PRUNE_EVERY_MS = 3_600_000
const RECOVER_EVERY_MS = 15_000
const GAUGES_EVERY_MS = 5_000

/** Builds a relay: Segment-compatible ingest (fastify), a durable queue, delivery to 1Flow, and ops endpoints. */
export async function createRelay(config: RelayConfig, options: RelayOptions = {}): Promise<Relay> {
  const logger = options.logger ?? createLogger()
  const clock = options.clock ?? systemClock
  const metrics = createMetrics()
  const queue = options.queue ?? (await openQueue(config))
  const status = new StatusTracker(() => clock.now())
  const deliverer = new Deliverer({ queue, config, logger, metrics, clock, status, ...(options.random && { random: options.random }), ...(options.fetch && { fetch: options.fetch }) })
  let shuttingDown = false
  let overCap = { at: 0, value: false }
  let storeFailing = false
  const timers: NodeJS.Timeout[] = []

  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: Math.max(SEGMENT_LIMITS.batchRequestBytes, WEBHOOK_BODY_LIMIT),
    return503OnClosing: true
  })

  async function isOverCap(): Promise<boolean> {
    const now = clock.now()
    if (now - overCap.at > DISK_CHECK_MS) overCap = { at: now, value: (await queue.sizeBytes()) > config.limits.diskCapBytes }
    return overCap.value
  }

  /** Why the relay cannot take events now (shutting down, over its disk cap), for ingest and webhooks alike. */
  async function unavailable(): Promise<Unavailable | undefined> {
    if (shuttingDown) return { error: 'the relay is shutting down; retry shortly', code: 'unavailable' }
    if (await isOverCap()) return { error: 'the relay queue is over its disk cap; retry later', code: 'queue_full', retryAfter: '60' }
    return undefined
  }

  /** Stores events; a failure is logged once when the queue starts failing, and once when it works again. */
  async function store(events: readonly NewEvent[]) {
    const result = await queue.enqueue(events)
    if (storeFailing) {
      storeFailing = false
      logger.info('the queue takes writes again; ingest accepts events')
    }
    return result
  }
  function onStoreFailed(error: unknown): Unavailable {
    if (!storeFailing) {
      storeFailing = true
      logger.error({ err: error }, 'could not write to the queue; answering 503 until it works again')
    }
    return { error: 'the relay could not store the events; retry shortly', code: 'queue_unavailable', retryAfter: '5' }
  }
  const onQueued = (n: number) => {
    if (n === 0) return
    status.received(n)
    deliverer.poke()
  }

  void app.register(ingestRoutes, { sources: config.sources, metrics, logger, clock, unavailable, store, onQueued, onStoreFailed })
  void app.register(webhookRoutes, { sources: config.sources, metrics, logger, clock, dedupWindowHours: config.limits.dedupWindowHours, unavailable, store, onQueued, onStoreFailed })
  void app.register(opsRoutes, {
    queue,
    deliverer,
    metrics,
    status,
    clock,
    statusPage: config.statusPage.enabled,
    shuttingDown: () => shuttingDown,
    notReady: async () =>
      shuttingDown ? 'shutting down' : (await isOverCap()) ? 'queue over its disk cap' : await queue.checkWritable().then(() => undefined, (e: Error) => `queue not writable: ${e.message}`)
  })

  const updateGauges = async () => setQueueGauges(metrics, await queue.stats(clock.now()))

  return {
    app,
    queue,
    metrics,
    deliverer,
    config,
    async start() {
      // One SQLite file has one relay: leases left by a crashed process are ours to take back at once.
      const recovered = await queue.recoverLeases(queue instanceof SqliteQueue ? Number.MAX_SAFE_INTEGER : clock.now())
      if (recovered > 0) logger.warn({ recovered }, 'took back events left in flight by a previous process; they will be delivered again')
      deliverer.start()
      const every = (ms: number, fn: () => Promise<unknown>) => timers.push(setInterval(() => void fn().catch((e: Error) => logger.warn({ err: e }, 'periodic task failed')), ms).unref())
      every(PRUNE_EVERY_MS, () => queue.pruneDedup(clock.now() - config.limits.dedupWindowHours * 3_600_000))
      every(Math.min(RECOVER_EVERY_MS, deliverer.leaseMs / 2), () => queue.recoverLeases(clock.now()))
      every(GAUGES_EVERY_MS, updateGauges)
      const address = await app.listen({ host: config.listen.host, port: config.listen.port })
      logger.info({ address, sources: config.sources.map((s) => s.name), queue: config.queue.split(':')[0] }, 'oneflow-relay listening')
      return address
    },
    async stop() {
      if (shuttingDown) return
      shuttingDown = true
      for (const t of timers) clearInterval(t)
      await app.close()
      await deliverer.stop()
      await queue.close()
      logger.info('oneflow-relay stopped')
    }
  }
}
