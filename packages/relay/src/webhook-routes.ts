/**
 * 1Flow → Segment, as a fastify plugin with its own body parsing and error handling: 1Flow POSTs each new survey
 * response to `/webhooks/1flow/{source}/{token}` (or `…/{source}?token=…`). The token is compared in constant
 * time before the body is even read; the response is converted to a Segment track event by core, durably
 * queued on the source's Segment lane, and only then answered 200. 1Flow retries a webhook hourly for 3 days,
 * so its `alert_id` is remembered for 4 days. Whatever the body, the answer is never a 5xx unless the relay
 * itself cannot store (a 500 would make 1Flow retry a hopeless body for 3 days).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { exceedsDepth, MAX_DEPTH, surveyResponseToTrack } from '@oneflow-seg/core'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { SourceConfig } from './config'
import type { IntakeDeps, Unavailable } from './ingest-routes'
import { orderingKey, UnstorableEventsError, type EnqueueResult } from './queue/queue'
import type { Readable } from 'node:stream'
import { BodyError, BUSY, parseJson, readBody, reserveBody } from './request-body'
import { VERSION } from './version'

/** 1Flow retries for 3 days; a day more covers clock differences and a late last try. */
export const WEBHOOK_DEDUP_MS = 4 * 24 * 3_600_000

/** A survey response with 40 long answers is well under this; anything bigger is not a survey response. */
export const WEBHOOK_BODY_LIMIT = 1024 * 1024

export interface WebhookDeps extends IntakeDeps {
  readonly dedupWindowHours: number
}

const digest = (text: string) => createHash('sha256').update(text).digest()

/** Hides webhook tokens in a URL before it is logged. */
export function redactWebhookUrl(url: string): string {
  return url
    .replace(/^(\/webhooks\/1flow\/[^/?#]+\/)[^/?#]+/, '$1[redacted]')
    .replace(/([?&]token=)[^&#]*/, '$1[redacted]')
}

interface WebhookParams {
  readonly source: string
  readonly token?: string
}

export async function webhookRoutes(app: FastifyInstance, deps: WebhookDeps): Promise<void> {
  const { sources, metrics, logger, clock } = deps
  const bySource = new Map<string, { source: SourceConfig; tokenDigest: Buffer }>()
  for (const source of sources)
    if (source.webhookToken && source.segment)
      bySource.set(source.name, { source, tokenDigest: digest(source.webhookToken) })

  const answer = (reply: FastifyReply, name: string, status: number, body: unknown) => {
    metrics.webhookRequests.inc({ source: bySource.has(name) ? name : '(unknown)', status: String(status) })
    return reply.code(status).send(body)
  }

  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', async (req: FastifyRequest, payload: Readable) => {
    const { bytes } = await readBody(payload, {
      contentEncoding: req.headers['content-encoding'],
      limit: WEBHOOK_BODY_LIMIT,
      what: `${WEBHOOK_BODY_LIMIT} bytes`
    })
    return parseJson(bytes)
  })

  app.setErrorHandler((error: Error & { code?: string; statusCode?: number }, req, reply) => {
    const name = (req.params as { source?: string }).source ?? '(unknown)'
    // 1Flow retries what it cannot deliver for 3 days: say why in the log, where an operator will look.
    const tooLarge =
      error.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || (error instanceof BodyError && error.code === 'request_too_large')
    const status = tooLarge
      ? 413
      : error instanceof BodyError ||
          (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500)
        ? 400
        : 500
    const message = tooLarge
      ? `the body is over ${WEBHOOK_BODY_LIMIT} bytes`
      : status === 400
        ? error.message
        : 'internal error'
    logger[status === 500 ? 'error' : 'warn'](
      { url: redactWebhookUrl(req.url), ...(status === 500 && { err: error }) },
      `1Flow webhook refused with ${status}: ${message}`
    )
    const code = tooLarge
      ? 'request_too_large'
      : error instanceof BodyError
        ? error.code
        : status === 400
          ? 'bad_request'
          : 'internal'
    return answer(reply, name, status, { error: message, code })
  })

  // Before the body is parsed: a wrong or missing token is a 401 whatever was sent, and nothing is stored.
  const authorize = async (
    req: FastifyRequest<{ Params: WebhookParams; Querystring: { token?: string } }>,
    reply: FastifyReply
  ) => {
    const entry = bySource.get(req.params.source)
    const given = req.params.token ?? req.query.token
    // Both sides are hashed first, so the comparison takes the same time whatever the token's length.
    const ok = entry !== undefined && typeof given === 'string' && timingSafeEqual(digest(given), entry.tokenDigest)
    if (!ok) {
      logger.warn(
        { source: req.params.source },
        '1Flow webhook refused: unknown source or wrong token (answered 401, nothing stored)'
      )
      return answer(reply, req.params.source, 401, {
        error:
          'the webhook token is missing or wrong, or this source does not take 1Flow webhooks; use the URL `oneflow-relay check-config` prints',
        code: 'unauthorized'
      })
    }
    if (Number(req.headers['content-length'] ?? 0) > WEBHOOK_BODY_LIMIT)
      return answer(reply.header('connection', 'close'), req.params.source, 413, {
        error: `the body is over ${WEBHOOK_BODY_LIMIT} bytes`,
        code: 'request_too_large'
      })
    if (!reserveBody(deps.bodies, req, reply, WEBHOOK_BODY_LIMIT))
      return answer(reply.header('retry-after', '60').header('connection', 'close'), req.params.source, 503, BUSY)
  }

  const receive = async (req: FastifyRequest<{ Params: WebhookParams }>, reply: FastifyReply) => {
    const { source } = bySource.get(req.params.source) as { source: SourceConfig }
    const segment = source.segment as NonNullable<SourceConfig['segment']>
    const body = req.body
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      logger.warn({ source: source.name }, '1Flow webhook body is not a JSON object; answered 400')
      return answer(reply, source.name, 400, {
        error: "the body must be a JSON object (1Flow's survey-response webhook)",
        code: 'invalid_body'
      })
    }
    if (exceedsDepth(body, MAX_DEPTH)) {
      logger.warn(
        { source: source.name },
        `1Flow webhook body is nested more than ${MAX_DEPTH} levels deep; answered 400`
      )
      return answer(reply, source.name, 400, {
        error: `the body is nested more than ${MAX_DEPTH} levels deep; a survey response never is`,
        code: 'too_deep'
      })
    }
    const unavailable = (problem: Unavailable) => {
      if (problem.retryAfter) reply.header('retry-after', problem.retryAfter)
      return answer(reply, source.name, 503, { error: problem.error, code: problem.code })
    }
    const problem = await deps.unavailable()
    if (problem) return unavailable(problem)
    const now = clock.now()
    let conversion: ReturnType<typeof surveyResponseToTrack>
    try {
      conversion = surveyResponseToTrack(body, {
        eventName: segment.eventName,
        receivedAt: now,
        // Without an alert_id, 1Flow's retry of the same response still has the same body.
        fallbackId: digest(JSON.stringify(body)).toString('hex').slice(0, 32),
        library: { name: 'oneflow-relay', version: VERSION }
      })
    } catch (error) {
      logger.warn(
        { source: source.name },
        `1Flow webhook body cannot be converted (${(error as Error).message}); answered 400`
      )
      return answer(reply, source.name, 400, {
        error: `the body cannot be read as a survey response: ${(error as Error).message}`,
        code: 'invalid_body'
      })
    }
    const { event, truncated } = conversion
    if (truncated.length > 0)
      logger.warn(
        { source: source.name, messageId: event.messageId, truncated },
        "survey response cut to fit Segment's 32 KB per event"
      )
    let result: EnqueueResult
    try {
      result = await deps.store([
        {
          messageId: event.messageId,
          // Its own dedup namespace: a client event with the same messageId cannot suppress this response.
          origin: 'webhook',
          sourceName: source.name,
          projectId: segment.laneId,
          userKey: orderingKey(event.userId ?? (event.anonymousId as string)),
          body: JSON.stringify(event),
          receivedAt: now,
          // Remember the alert_id for 4 days (1Flow retries for 3) even when the dedup window is shorter.
          dedupFrom: now + Math.max(0, WEBHOOK_DEDUP_MS - deps.dedupWindowHours * 3_600_000)
        }
      ])
    } catch (error) {
      if (error instanceof UnstorableEventsError) {
        logger.warn({ source: source.name, error: error.message }, '1Flow webhook refused by the queue; answered 400')
        return answer(reply, source.name, 400, { error: error.message, code: 'unstorable' })
      }
      return unavailable(deps.onStoreFailed(error))
    }
    if (result.accepted > 0) {
      deps.onQueued(result.accepted)
      logger.info({ source: source.name, messageId: event.messageId }, 'survey response queued for Segment')
    }
    return answer(reply, source.name, 200, { success: true, ...(result.duplicates > 0 && { duplicate: true }) })
  }

  const options = { bodyLimit: WEBHOOK_BODY_LIMIT, onRequest: authorize }
  app.post<{ Params: WebhookParams; Querystring: { token?: string } }>('/webhooks/1flow/:source', options, receive)
  app.post<{ Params: WebhookParams; Querystring: { token?: string } }>(
    '/webhooks/1flow/:source/:token',
    options,
    receive
  )
}
