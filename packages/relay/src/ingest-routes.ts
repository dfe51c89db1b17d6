/**
 * The ingest API as a fastify plugin: every path Segment's clients POST to (`/v1/track` … and analytics.js's
 * `/v1/t` …, `/v1/batch`, `/v1/b`, `/v1/import`), bodies as they send them (JSON as `application/json` or
 * `text/plain`, gzip or deflate), CORS for browsers on these routes only, and analytics.js's own telemetry
 * (`/v1/m`) answered at once. A request's events are durably queued before the 200.
 */
import { randomUUID } from 'node:crypto'
import type { Readable } from 'node:stream'
import { SEGMENT_LIMITS, SEGMENT_PATHS, type SegmentRoute } from '@oneflow-seg/core'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { SourceConfig } from './config'
import { acceptRequest, writeKeyFromBasic } from './ingest'
import type { Metrics } from './metrics'
import { UnstorableEventsError, type EnqueueResult, type NewEvent } from './queue/queue'
import type { Clock } from './rate-limiter'
import {
  BodyError,
  BUSY,
  declaredLength,
  hasBody,
  parseJson,
  readBody,
  reserveBody,
  type BodyBudget
} from './request-body'

/** A 503 the relay answers while it cannot take events. */
export interface Unavailable {
  readonly error: string
  readonly code: 'unavailable' | 'queue_full' | 'queue_unavailable'
  readonly retryAfter?: string
}

/** What the routes that take events in (ingest and 1Flow's webhook) need from the relay. */
export interface IntakeDeps {
  readonly sources: readonly SourceConfig[]
  readonly metrics: Metrics
  readonly logger: Logger
  readonly clock: Clock
  /** Why the relay cannot take events right now, or undefined. */
  unavailable(): Promise<Unavailable | undefined>
  /** Durably stores events (deliverable ones and dead letters alike). */
  store(events: readonly NewEvent[]): Promise<EnqueueResult>
  /** Events were queued for delivery. */
  onQueued(count: number): void
  /** The queue refused a write: the relay answers 503 and says so once. */
  onStoreFailed(error: unknown): Unavailable
  /** Body bytes the relay may hold at once, shared by every route that reads bodies. */
  readonly bodies: BodyBudget
}

interface RouteConfig {
  readonly route: SegmentRoute | 'telemetry' | 'preflight'
  readonly limit: number
  readonly what: string
}

const SIZE = {
  event: { limit: SEGMENT_LIMITS.eventBytes, what: '32 KB per event' },
  batch: { limit: SEGMENT_LIMITS.batchRequestBytes, what: '500 KB per batch request' }
} as const

/** The request headers a browser may send (analytics.js adds Authorization and X-Retry-Count). */
const ALLOWED_HEADERS = 'authorization, content-type, content-encoding, x-retry-count'

/** A preflight, telemetry or refused request with a body larger than this closes its connection rather than keep it alive. */
const DRAIN_MAX_BYTES = 4 * 1024

/** The decoded size of each request's body, for the storage rule (a request stores at most about twice that). */
const decodedSizes = new WeakMap<object, number>()

export async function ingestRoutes(app: FastifyInstance, deps: IntakeDeps): Promise<void> {
  const { metrics, logger, clock } = deps
  const sourcesByKey = new Map<string, SourceConfig>(deps.sources.map((s) => [s.writeKey, s]))
  const knownKey = (key: string) => sourcesByKey.has(key)

  // Every body is JSON whatever its content type (analytics.js sends text/plain to avoid a preflight), maybe
  // compressed. Read from the stream by readBody, never beyond the route's limit; a request without an HTTP Basic
  // write key is read no further than its first few KB until the key in its body is found and known.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', async (req: FastifyRequest, payload: Readable) => {
    const { limit, what } = req.routeOptions.config as unknown as RouteConfig
    const authenticated = writeKeyFromBasic(req.headers.authorization) !== undefined
    const { bytes, length } = await readBody(payload, {
      contentEncoding: req.headers['content-encoding'],
      limit,
      what,
      ...(!authenticated && { knownKey })
    })
    decodedSizes.set(req.raw, length)
    return parseJson(bytes)
  })

  /** Answers now, before any byte of the body is read; a connection with a body still to come is closed. */
  const answerEarly = (req: FastifyRequest, reply: FastifyReply, route: string, status: number, body?: unknown) => {
    metrics.ingestRequests.inc({ route, status: String(status) })
    const declared = declaredLength(req)
    if (hasBody(req) && (declared === undefined || declared > DRAIN_MAX_BYTES)) reply.header('connection', 'close')
    return reply.code(status).send(body)
  }

  // Everything that decides whether a request's body is read at all happens here, before it is: the preflight
  // and telemetry answers, the write key in Basic auth, the declared size, "cannot take events now" and the
  // body budget (fastify's under-pressure plugin works the same way).
  app.addHook('onRequest', async (req, reply) => {
    // Browsers send straight to the relay (analytics.js with the relay as its API host). Write keys in
    // browsers are public and no cookie is read, so any origin may send.
    reply.header('access-control-allow-origin', '*').header('access-control-expose-headers', 'retry-after')
    if (req.method === 'OPTIONS') {
      reply
        .header('access-control-allow-methods', 'POST')
        // The headers the page asked for (analytics.js may add custom ones), else the ones Segment's clients use.
        .header('access-control-allow-headers', req.headers['access-control-request-headers'] ?? ALLOWED_HEADERS)
        .header('access-control-max-age', '86400')
      return answerEarly(req, reply, 'preflight', 204)
    }
    if (req.method !== 'POST') return
    const { route, limit, what } = req.routeOptions.config as unknown as RouteConfig
    // analytics.js's own telemetry: acknowledged, its body never read, nothing queued.
    if (route === 'telemetry') return answerEarly(req, reply, route, 204)
    const key = writeKeyFromBasic(req.headers.authorization)
    if (key !== undefined && !sourcesByKey.has(key))
      return answerEarly(req, reply, route, 401, { error: 'unknown write key', code: 'unknown_write_key' })
    const declared = declaredLength(req)
    if (declared !== undefined && declared > limit)
      return answerEarly(req, reply, route, 400, {
        error: `the request body is over ${what}`,
        code: 'request_too_large',
        limit
      })
    const problem = await deps.unavailable()
    if (problem) {
      if (problem.retryAfter) reply.header('retry-after', problem.retryAfter)
      return answerEarly(req, reply, route, 503, { error: problem.error, code: problem.code })
    }
    if (!reserveBody(deps.bodies, req, reply, limit))
      return answerEarly(req, reply.header('retry-after', '5'), route, 503, BUSY)
  })

  app.setErrorHandler((error: Error & { code?: string; statusCode?: number }, req, reply) => {
    const { route, limit, what } = req.routeOptions.config as unknown as RouteConfig
    const answer = (status: number, body: Record<string, unknown>) => {
      metrics.ingestRequests.inc({ route, status: String(status) })
      return reply.code(status).send(body)
    }
    if (error instanceof BodyError) {
      // The rest of the body is not read: the connection cannot carry another request.
      reply.header('connection', 'close')
      return answer(error.statusCode, {
        error: error.message,
        code: error.code,
        ...(error.limit !== undefined && { limit: error.limit })
      })
    }
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
      return answer(400, { error: `the request body is over ${what}`, code: 'request_too_large', limit })
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500)
      return answer(400, { error: error.message, code: 'bad_request' })
    logger.error({ err: error, route }, 'unexpected error handling an ingest request')
    return answer(500, { error: 'internal error', code: 'internal' })
  })

  async function ingest(route: SegmentRoute, req: FastifyRequest, reply: FastifyReply) {
    const started = process.hrtime.bigint()
    const answer = (status: number, body: unknown) => {
      metrics.ingestRequests.inc({ route, status: String(status) })
      metrics.ingestDuration.observe({ route }, Number(process.hrtime.bigint() - started) / 1e9)
      return reply.code(status).send(body)
    }
    const unavailable = (problem: Unavailable) => {
      if (problem.retryAfter) reply.header('retry-after', problem.retryAfter)
      return answer(503, { error: problem.error, code: problem.code })
    }
    const result = acceptRequest(route, req.body, req.headers.authorization, sourcesByKey, clock.now(), randomUUID, {
      decodedBytes: decodedSizes.get(req.raw)
    })
    if ('status' in result) {
      metrics.ingestEvents.inc({ type: route, result: 'refused' })
      return answer(result.status, result.body)
    }
    let stored: EnqueueResult
    try {
      stored = await deps.store([...result.events, ...result.deadLetters])
    } catch (error) {
      if (error instanceof UnstorableEventsError) {
        logger.warn(
          { source: result.source.name, route, error: error.message },
          'the queue refused a request’s events; answered 400'
        )
        return answer(400, { error: error.message, code: 'unstorable' })
      }
      return unavailable(deps.onStoreFailed(error))
    }
    deps.onQueued(stored.accepted)
    const perType = new Map<string, number>()
    for (const type of result.types) perType.set(type, (perType.get(type) ?? 0) + 1)
    for (const [type, n] of perType) metrics.ingestEvents.inc({ type, result: 'queued' }, n)
    if (stored.duplicates > 0) metrics.ingestEvents.inc({ type: route, result: 'duplicate' }, stored.duplicates)
    const { rejected } = result
    if (rejected.length > 0) {
      for (const r of rejected) metrics.ingestRejected.inc({ reason: r.code })
      // One line per request, not per event: a batch of 2,500 bad events is one log line.
      logger.warn(
        {
          source: result.source.name,
          route,
          rejected: rejected.slice(0, 50).map(({ index, code }) => ({ index, code })),
          count: rejected.length
        },
        `rejected ${rejected.length} of ${result.events.length + rejected.length} event(s) at ingest (kept as dead letters: oneflow-relay dlq list); first: ${rejected[0]?.error}`
      )
    }
    return answer(200, { success: true, ...(rejected.length > 0 && { rejected }) })
  }

  for (const [path, route] of Object.entries(SEGMENT_PATHS)) {
    const size = route === 'batch' ? SIZE.batch : SIZE.event
    const config: RouteConfig = { route, ...size }
    app.post(`/v1/${path}`, { bodyLimit: size.limit, config }, (req, reply) => ingest(route, req, reply))
  }

  // analytics.js's own telemetry: answered in onRequest, its body never read; never queued.
  const telemetry: RouteConfig = { route: 'telemetry', ...SIZE.event }
  app.post('/v1/m', { config: telemetry }, async (_req, reply) => reply.code(204).send())
  // Preflights are answered in onRequest, before any body; this route only makes the paths known to the router.
  const preflight: RouteConfig = { route: 'preflight', limit: 0, what: 'no body' }
  app.options('/v1/*', { config: preflight }, async (_req, reply) => reply.code(204).send())
}
