import { randomUUID } from 'node:crypto'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { ConfigError, type RelayConfig, type SourceConfig } from './config'
import { Deliverer } from './deliverer'
import { acceptRequest, EVENT_TYPES, INGEST_LIMITS, type IngestRoute } from './ingest'
import { createLogger } from './logger'
import { createMetrics, type Metrics } from './metrics'
import type { Queue } from './queue/queue'
import { PgQueue } from './queue/pg-queue'
import { SqliteQueue } from './queue/sqlite-queue'
import { systemClock, type Clock } from './rate-limiter'
import { STATUS_PAGE_HTML, StatusTracker } from './status'
import { redactWebhookUrl, registerWebhooks, WEBHOOK_BODY_LIMIT, type Unavailable } from './webhook'

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
  const sourcesByKey = new Map<string, SourceConfig>(config.sources.map((s) => [s.writeKey, s]))
  let shuttingDown = false
  let overCap = { at: 0, value: false }
  const timers: NodeJS.Timeout[] = []

  const app = Fastify({ loggerInstance: logger as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: INGEST_LIMITS.batchRequestBytes, return503OnClosing: true })

  // Segment clients send JSON, sometimes as text/plain (browser beacons): parse every body as JSON, ourselves.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, body === '' ? undefined : JSON.parse(body as string))
    } catch {
      done(Object.assign(new SyntaxError('the body is not valid JSON'), { statusCode: 400, code: 'invalid_json' }), undefined)
    }
  })

  app.setErrorHandler((error: Error & { code?: string; statusCode?: number }, req, reply) => {
    if (req.url.startsWith('/webhooks/')) {
      // 1Flow retries what it cannot deliver for 3 days: say why in the log, where an operator will look.
      const tooLarge = error.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
      const status = tooLarge ? 413 : error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500 ? 400 : 500
      const message = tooLarge ? `the body is over ${WEBHOOK_BODY_LIMIT} bytes` : status === 400 ? error.message : 'internal error'
      logger[status === 500 ? 'error' : 'warn']({ url: redactWebhookUrl(req.url), ...(status === 500 && { err: error }) }, `1Flow webhook refused with ${status}: ${message}`)
      return reply.code(status).send({ error: message, code: tooLarge ? 'request_too_large' : error.code === 'invalid_json' ? 'invalid_json' : status === 400 ? 'bad_request' : 'internal' })
    }
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      const limit = req.url.startsWith('/v1/batch') || req.url.startsWith('/v1/import') ? INGEST_LIMITS.batchRequestBytes : INGEST_LIMITS.eventBytes
      const what = limit === INGEST_LIMITS.eventBytes ? '32 KB per event' : '500 KB per batch request'
      return reply.code(400).send({ error: `the request body is over ${what}`, code: 'request_too_large', limit })
    }
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      return reply.code(400).send({ error: error.message, code: error.code === 'invalid_json' ? 'invalid_json' : 'bad_request' })
    }
    logger.error({ err: error, url: redactWebhookUrl(req.url) }, 'unexpected error handling a request')
    return reply.code(500).send({ error: 'internal error', code: 'internal' })
  })

  // Browsers may send straight to the relay (analytics.js with the relay as its API host).
  app.addHook('onRequest', async (_req, reply) => {
    reply.header('access-control-allow-origin', '*')
  })
  app.options('/v1/*', async (_req, reply) =>
    reply.code(204).header('access-control-allow-methods', 'POST').header('access-control-allow-headers', 'authorization, content-type').header('access-control-max-age', '86400').send()
  )

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

  async function ingest(route: IngestRoute, req: FastifyRequest, reply: FastifyReply) {
    const started = process.hrtime.bigint()
    const answer = (status: number, body: unknown) => {
      metrics.ingestRequests.inc({ route, status: String(status) })
      metrics.ingestDuration.observe({ route }, Number(process.hrtime.bigint() - started) / 1e9)
      return reply.code(status).send(body)
    }
    const problem = await unavailable()
    if (problem) {
      if (problem.retryAfter) reply.header('retry-after', problem.retryAfter)
      return answer(503, { error: problem.error, code: problem.code })
    }
    let result
    try {
      result = acceptRequest(route, req.body, req.headers.authorization, sourcesByKey, clock.now(), randomUUID)
    } catch {
      return answer(400, { error: 'the request cannot be read as Segment events', code: 'invalid_body' })
    }
    if ('status' in result) {
      metrics.ingestEvents.inc({ type: route, result: 'rejected' })
      return answer(result.status, result.body)
    }
    try {
      const { accepted, duplicates } = await queue.enqueue(result.events)
      status.received(accepted)
      const perType = new Map<string, number>()
      for (const type of result.types) perType.set(type, (perType.get(type) ?? 0) + 1)
      for (const [type, n] of perType) metrics.ingestEvents.inc({ type, result: 'queued' }, n)
      if (duplicates > 0) metrics.ingestEvents.inc({ type: route, result: 'duplicate' }, duplicates)
    } catch (error) {
      logger.error({ err: error }, 'could not write to the queue')
      reply.header('retry-after', '5')
      return answer(503, { error: 'the relay could not store the events; retry shortly', code: 'queue_unavailable' })
    }
    deliverer.poke()
    return answer(200, { success: true })
  }

  for (const type of EVENT_TYPES) app.post(`/v1/${type}`, { bodyLimit: INGEST_LIMITS.eventBytes }, (req, reply) => ingest(type, req, reply))
  for (const route of ['batch', 'import'] as const) app.post(`/v1/${route}`, { bodyLimit: INGEST_LIMITS.batchRequestBytes }, (req, reply) => ingest(route, req, reply))

  registerWebhooks(app, {
    sources: config.sources,
    queue,
    deliverer,
    metrics,
    logger,
    clock,
    dedupWindowHours: config.limits.dedupWindowHours,
    unavailable,
    onQueued: (n) => status.received(n)
  })

  app.get('/health/live', async () => ({ status: 'ok' }))
  app.get('/health/ready', async (_req, reply) => {
    const problem = shuttingDown ? 'shutting down' : (await isOverCap()) ? 'queue over its disk cap' : await queue.checkWritable().then(() => undefined, (e: Error) => `queue not writable: ${e.message}`)
    // Never unready because of 1Flow: absorbing 1Flow outages is what the relay is for.
    return reply.code(problem ? 503 : 200).send({ status: problem ? 'not ready' : 'ready', ...(problem && { problem }), alerts: deliverer.alerts() })
  })
  app.get('/health', async () => ({ status: shuttingDown ? 'shutting down' : 'ok', alerts: deliverer.alerts(), queue: await queue.stats(clock.now()) }))
  app.get('/metrics', async (_req, reply) => {
    await updateGauges()
    return reply.header('content-type', metrics.registry.contentType).send(await metrics.registry.metrics())
  })

  if (config.statusPage.enabled) {
    app.get('/status', async (_req, reply) => reply.header('content-type', 'text/html; charset=utf-8').send(STATUS_PAGE_HTML))
    app.get('/status/data', async () => {
      const history = status.history()
      return {
        time: new Date(clock.now()).toISOString(),
        queue: await queue.stats(clock.now()),
        totals: status.totals,
        // The last complete second.
        rate: { requestsPerSecond: history.at(-2)?.requests ?? 0, limit: deliverer.requestLimit() },
        history,
        errors: status.lastErrors(),
        alerts: deliverer.alerts()
      }
    })
  }

  async function updateGauges() {
    const stats = await queue.stats(clock.now())
    metrics.queueDepth.set({ state: 'pending' }, stats.pending - stats.retrying)
    metrics.queueDepth.set({ state: 'retry' }, stats.retrying)
    metrics.queueDepth.set({ state: 'leased' }, stats.leased)
    metrics.queueDepth.set({ state: 'dead' }, stats.dead)
    metrics.oldestAge.set(stats.oldestAgeMs / 1000)
  }

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
