/**
 * The relay's composition and lifecycle: the queue, the deliverer, and three fastify plugins — ingest (Segment's
 * HTTP Tracking API), 1Flow's survey-response webhook, and the ops endpoints — sharing one notion of "the relay
 * cannot take events now".
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { ConfigError, type RelayConfig } from './config'
import { Deliverer } from './deliverer'
import { ingestRoutes, type Unavailable } from './ingest-routes'
import { createLogger } from './logger'
import { VERSION } from './version'
import { createMetrics, type Metrics } from './metrics'
import { opsRoutes, setQueueGauges, StatsCache } from './ops-routes'
import type { NewEvent, Queue } from './queue/queue'
import { PG_TIMEOUT_MS, PgQueue } from './queue/pg-queue'
import { SqliteQueue } from './queue/sqlite-queue'
import { DeferredQueue } from './queue/deferred-queue'
import { systemClock, type Clock } from './rate-limiter'
import { describeError, PROBE_EVERY_MS, QueueHealth } from './queue-health'
import { BODY_BUDGET_BYTES, BodyBudget } from './request-body'
import { StatusTracker } from './status'
import { webhookRoutes } from './webhook-routes'

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
  /** Where health, metrics and the status page are served: `app` itself, or the listen.ops listener. */
  readonly opsApp: FastifyInstance
  /** The ops endpoints' base URL once started (the ingest URL unless listen.ops is set). */
  readonly opsUrl: string | undefined
  readonly queue: Queue
  readonly metrics: Metrics
  readonly deliverer: Deliverer
  readonly config: RelayConfig
  /** Starts delivery and listens; resolves with the base URL, e.g. http://127.0.0.1:8787. */
  start(): Promise<string>
  /** Stops accepting, finishes deliveries in flight, closes the queue. Nothing acknowledged is lost. */
  stop(): Promise<void>
}

/** The 503 while the queue does not take writes: clients retry after a few seconds. */
const QUEUE_FAILING: Unavailable = {
  error: 'the relay cannot store events right now; retry shortly',
  code: 'queue_unavailable',
  retryAfter: '5'
}

/** Opens the queue a config names; `onSpace` hears when its disk fills (true) and has room again (false). */
export async function openQueue(config: RelayConfig, onSpace?: (full: boolean) => void): Promise<Queue> {
  if (config.queue.startsWith('sqlite:'))
    return new SqliteQueue(config.queue.slice('sqlite:'.length), {
      reserveBytes: config.limits.diskReserveBytes,
      ...(onSpace && { onSpace })
    })
  try {
    return await PgQueue.open(config.queue, { dedupWindowMs: config.limits.dedupWindowHours * 3_600_000 })
  } catch (error) {
    // The URL may carry a password: name the problem, not the URL.
    throw new ConfigError([{ key: 'queue', message: `cannot open the PostgreSQL queue: ${(error as Error).message}` }])
  }
}

const PRUNE_EVERY_MS = 3_600_000
const RECOVER_EVERY_MS = 15_000
const GAUGES_EVERY_MS = 5_000
const DEAD_LETTER_CLEANUP_EVERY_MS = 60_000
const COMPACT_EVERY_MS = 10_000
/** On stop, connections still open this long after closing began (slow or stalled clients) are cut. */
const FORCE_CLOSE_AFTER_MS = 3_000
/** The most of a body the relay reads on a route that takes none (unknown paths). */
const UNROUTED_BODY_LIMIT = 4 * 1024
/** Keep-alive longer than the usual load balancer's 60 s idle timeout, so the balancer closes first. */
const KEEP_ALIVE_MS = 65_000

/** Builds a relay: Segment-compatible ingest (fastify), a durable queue, delivery to 1Flow, and ops endpoints. */
export async function createRelay(config: RelayConfig, options: RelayOptions = {}): Promise<Relay> {
  const logger = options.logger ?? createLogger()
  const clock = options.clock ?? systemClock
  const metrics = createMetrics()
  metrics.buildInfo.set({ version: VERSION, node: process.version }, 1)
  // The probe reads `queue` when it runs, which is after it is assigned.
  const health: QueueHealth = new QueueHealth(logger, clock, () => queue.checkWritable())
  const queue: Queue =
    options.queue ??
    (config.queue.startsWith('sqlite:')
      ? await openQueue(config, (full) =>
          full
            ? logger.error(
                { reserveBytes: config.limits.diskReserveBytes },
                'the disk holding the queue is full: its reserve is released so delivery can free room; ingest answers 503 until there is room again (nothing acknowledged is lost)'
              )
            : logger.info('the disk holding the queue has room again; the reserve is back and ingest accepts events')
        )
      : // PostgreSQL may not be up yet (a compose file, a reboot): the relay starts, answers 503, and opens the
        // queue with backoff; it is never a config error.
        new DeferredQueue({
          open: () => PgQueue.open(config.queue, { dedupWindowMs: config.limits.dedupWindowHours * 3_600_000 }),
          onOpenFailed: (error) => health.failed(error, 'connecting to the PostgreSQL queue')
        }))
  const status = new StatusTracker(() => clock.now())
  const deliverer = new Deliverer({
    queue,
    config,
    logger,
    metrics,
    clock,
    status,
    health,
    ...(options.random && { random: options.random }),
    ...(options.fetch && { fetch: options.fetch })
  })
  let shuttingDown = false
  let opsUrl: string | undefined
  const timers: NodeJS.Timeout[] = []
  const { requestTimeoutMs } = config.limits

  const server = () =>
    Fastify({
      loggerInstance: logger as FastifyBaseLogger,
      logController: new LogController({ disableRequestLogging: true }),
      // Routes that take bodies read them with their own limits (ingest, the webhook); anything else — an unknown
      // path, an ops endpoint — is never worth more than a few KB.
      bodyLimit: UNROUTED_BODY_LIMIT,
      return503OnClosing: true,
      // A request must arrive whole within requestTimeoutMs (body included), its headers within 10 s; the server
      // checks often enough that a slow client is cut close to its deadline, not up to 30 s later.
      requestTimeout: requestTimeoutMs,
      connectionTimeout: requestTimeoutMs,
      keepAliveTimeout: KEEP_ALIVE_MS,
      maxRequestsPerSocket: 10_000,
      http: {
        headersTimeout: Math.min(10_000, requestTimeoutMs),
        connectionsCheckingInterval: Math.min(1_000, Math.floor(requestTimeoutMs / 4))
      }
    })
  const app = server()
  // Health, metrics and the status page: on the ingest listener, or on one of their own (listen.ops).
  const opsApp = config.listen.ops ? server() : app

  /** Why the relay cannot take events now (shutting down, the queue failing or over its disk cap), for ingest and webhooks alike. */
  async function unavailable(): Promise<Unavailable | undefined> {
    if (shuttingDown) return { error: 'the relay is shutting down; retry shortly', code: 'unavailable' }
    const space = queue.spaceProblem?.()
    if (space) return { error: space, code: 'queue_full', retryAfter: '60' }
    if (health.problem) return QUEUE_FAILING
    let live: number
    try {
      live = await queue.liveBytes()
    } catch (error) {
      health.failed(error, 'measuring the queue')
      return QUEUE_FAILING
    }
    if (live > config.limits.diskCapBytes)
      return { error: 'the relay queue is over its disk cap; retry later', code: 'queue_full', retryAfter: '60' }
    return undefined
  }

  async function store(events: readonly NewEvent[]) {
    const result = await queue.enqueue(events)
    health.succeeded()
    return result
  }
  function onStoreFailed(error: unknown): Unavailable {
    health.failed(error, 'storing events')
    return QUEUE_FAILING
  }
  const onQueued = (n: number) => {
    if (n === 0) return
    status.received(n)
    deliverer.noteIngest()
    deliverer.poke()
  }

  const intake = {
    sources: config.sources,
    metrics,
    logger,
    clock,
    unavailable,
    store,
    onQueued,
    onStoreFailed,
    bodies: new BodyBudget(BODY_BUDGET_BYTES)
  }
  void app.register(ingestRoutes, intake)
  void app.register(webhookRoutes, { ...intake, dedupWindowHours: config.limits.dedupWindowHours })
  const figures = new StatsCache(() => queue.stats(clock.now()))
  void opsApp.register(opsRoutes, {
    figures,
    deliverer,
    metrics,
    status,
    clock,
    statusPage: config.statusPage.enabled,
    sources: config.sources,
    bodies: intake.bodies,
    shuttingDown: () => shuttingDown,
    notReady: async () => {
      if (shuttingDown) return 'shutting down'
      const problem = (await unavailable())?.error
      if (problem) return problem
      try {
        await queue.checkWritable()
        return undefined
      } catch (error) {
        health.failed(error, 'readiness check')
        return `queue not writable: ${describeError(error)}`
      }
    }
  })

  /** Why delivery waits for something outside the relays, as last logged (once when it starts, once when it ends). */
  let heldBack: string | undefined
  const updateGauges = async () => {
    setQueueGauges(metrics, await figures.get())
    const now = queue.deliveryHeldBack?.()
    if (now === heldBack) return
    if (now) logger.warn({ reason: now }, now)
    else logger.info('delivery no longer waits for a transaction outside the relays')
    heldBack = now
  }
  const cleanUpDeadLetters = async () => {
    const now = clock.now()
    const { expired, overSize } = await queue.pruneDead(
      now - config.limits.deadLetterRetentionDays * 86_400_000,
      config.limits.deadLetterMaxBytes
    )
    if (expired > 0) metrics.deadLettersRemoved.inc({ reason: 'age' }, expired)
    if (overSize > 0) metrics.deadLettersRemoved.inc({ reason: 'size' }, overSize)
    if (expired + overSize > 0) {
      logger.warn(
        {
          expired,
          overSize,
          retentionDays: config.limits.deadLetterRetentionDays,
          maxBytes: config.limits.deadLetterMaxBytes
        },
        `removed ${expired + overSize} dead letter(s): ${expired} older than ${config.limits.deadLetterRetentionDays} days, ${overSize} oldest over the dead-letter size limit`
      )
    }
  }

  return {
    app,
    opsApp,
    get opsUrl() {
      return opsUrl
    },
    queue,
    metrics,
    deliverer,
    config,
    async start() {
      // A database that answers at once is open before the relay listens (no 503 at start); one that does not is
      // waited for in the background.
      if (queue instanceof DeferredQueue) {
        let timer: NodeJS.Timeout | undefined
        await Promise.race([queue.opened, new Promise((r) => (timer = setTimeout(r, PG_TIMEOUT_MS)))])
        clearTimeout(timer)
      }
      // One SQLite file has one relay: leases left by a crashed process are ours to take back at once. (On
      // PostgreSQL a relay takes a lane over when it first leases it, and a later recovery reports what that took back.)
      /** Takes back leases ended by `now`, saying how many (`what`) when there were any. */
      const takeBack = async (now: number, what: string) => {
        const recovered = await queue.recoverLeases(now)
        if (recovered > 0) logger.warn({ recovered }, `${what}; they will be delivered again`)
      }
      try {
        await takeBack(
          queue instanceof SqliteQueue ? Number.MAX_SAFE_INTEGER : clock.now(),
          'took back events left in flight by a previous process'
        )
      } catch (error) {
        // A queue that cannot be reached yet: the periodic recovery below takes them back once it can.
        health.failed(error, 'taking back expired leases')
      }
      deliverer.start()
      // Housekeeping never ends the process, and a task that fails is not the queue failing: only when a real
      // write fails too (checkWritable) does ingest answer 503 (QueueHealth). Otherwise the task's failure is
      // logged once (and its recovery once), ingest goes on, and the task runs again on its timer — a slow
      // figures read or a cancelled clean-up on a large queue must not take ingest down.
      const every = (ms: number, what: string, fn: () => Promise<unknown>) =>
        timers.push(
          setInterval(
            () =>
              void fn().then(
                () => health.worked(what),
                (error: unknown) => health.failedUnlessWritable(error, what)
              ),
            ms
          ).unref()
        )
      every(PROBE_EVERY_MS, 'probing the queue', () => health.check())
      every(PRUNE_EVERY_MS, 'forgetting old message ids', () =>
        queue.pruneDedup(clock.now() - config.limits.dedupWindowHours * 3_600_000)
      )
      every(Math.min(RECOVER_EVERY_MS, deliverer.leaseMs / 2), 'taking back expired leases', () =>
        takeBack(
          clock.now(),
          'took back leased events (their lease ended, or another relay had their project and lost it)'
        )
      )
      every(GAUGES_EVERY_MS, 'reading queue figures', updateGauges)
      every(DEAD_LETTER_CLEANUP_EVERY_MS, 'removing old dead letters', cleanUpDeadLetters)
      every(COMPACT_EVERY_MS, 'compacting the queue', () => queue.compact())
      const address = await app.listen({ host: config.listen.host, port: config.listen.port })
      const opsAddress = config.listen.ops
        ? await opsApp.listen({ host: config.listen.ops.host, port: config.listen.ops.port })
        : address
      logger.info(
        {
          address,
          ...(opsApp !== app && { ops: opsAddress }),
          sources: config.sources.map((s) => s.name),
          queue: config.queue.split(':')[0]
        },
        'oneflow-relay listening'
      )
      opsUrl = opsAddress
      return address
    },
    async stop() {
      if (shuttingDown) return
      shuttingDown = true
      for (const t of timers) clearInterval(t)
      // Answers in flight finish; a client still sending (slow, stalled) is cut after a short grace, so
      // shutdown never waits for its request timeout.
      const cut = setTimeout(
        () => app.server.closeAllConnections(),
        Math.min(FORCE_CLOSE_AFTER_MS, config.shutdownGraceMs / 3)
      )
      await app.close()
      if (opsApp !== app) await opsApp.close()
      clearTimeout(cut)
      await deliverer.stop()
      await queue.close()
      logger.info('oneflow-relay stopped')
    }
  }
}
