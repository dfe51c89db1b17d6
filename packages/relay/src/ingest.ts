/**
 * Segment's HTTP Tracking API, as a contract a relay can keep: which requests are refused whole (the
 * envelope), which events are rejected one by one while the rest are kept, and how accepted events are
 * stamped before they are queued. The rules themselves are core's (`checkSegmentEvent`, `SEGMENT_LIMITS`).
 */
import {
  checkSegmentEvent,
  isValidMessageId,
  SEGMENT_LIMITS,
  type SegmentEventProblem,
  type SegmentRoute
} from '@oneflow-seg/core'
import type { SourceConfig } from './config'
import type { NewEvent } from './queue/queue'

/** The envelope refused: nothing of the request is stored. */
export interface IngestError {
  readonly status: 400 | 401
  readonly body: { readonly error: string; readonly code: string; readonly limit?: number }
}

/** One event of an accepted request that breaks a rule: not queued for delivery, kept as a dead letter. */
export interface RejectedEvent {
  readonly index: number
  readonly code: SegmentEventProblem['code']
  readonly error: string
}

export interface Accepted {
  readonly source: SourceConfig
  /** Events to deliver, in request order. */
  readonly events: readonly NewEvent[]
  readonly types: readonly string[]
  /** Events that break a rule, each also in `deadLetters`. */
  readonly rejected: readonly RejectedEvent[]
  /** The rejected events as dead-letter rows (reason "rejected at ingest: …"), for `oneflow-relay dlq list`. */
  readonly deadLetters: readonly NewEvent[]
}

type Json = Record<string, unknown>
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)
const refuse = (status: 400 | 401, code: string, error: string, limit?: number): IngestError => ({
  status,
  body: { error, code, ...(limit !== undefined && { limit }) }
})

/** The write key from `Authorization: Basic base64(writeKey:)`, or undefined. */
export function writeKeyFromBasic(authorization: string | undefined): string | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization ?? '')
  if (!match) return undefined
  const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8')
  const key = decoded.includes(':') ? decoded.slice(0, decoded.indexOf(':')) : decoded
  return key === '' ? undefined : key
}

const present = (v: unknown) =>
  (typeof v === 'string' && v.trim() !== '') || (typeof v === 'number' && Number.isFinite(v))

/** A time the client sent as an ISO string, in ms; NaN when it is missing or not a time. */
function parseTime(value: unknown): number {
  return typeof value === 'string' ? Date.parse(value) : NaN
}

/** Segment's clock-skew correction: timestamp = receivedAt − (sentAt − timestamp), when both client clocks are known. */
function correctSkew(event: Json, sent: number, receivedAt: number): void {
  const at = parseTime(event.timestamp)
  if (!Number.isFinite(sent) || !Number.isFinite(at)) return
  event.originalTimestamp ??= event.timestamp
  event.timestamp = new Date(receivedAt - (sent - at)).toISOString()
}

// The fields the relay stamps (type, messageId, receivedAt, timestamp) do not count against the client's 32 KB.
const STAMP_ALLOWANCE = 256

/** The write key of a request: HTTP Basic first, then `writeKey` in the body (analytics.js sends both). */
export function requestWriteKey(body: unknown, authorization: string | undefined): string | undefined {
  const fromBody =
    isObject(body) && typeof body.writeKey === 'string' && body.writeKey !== '' ? body.writeKey : undefined
  return writeKeyFromBasic(authorization) ?? fromBody
}

/** An event that was rejected, as JSON for the dead-letter store (never throws, never holds the write key). */
function rejectedBody(raw: unknown): string {
  try {
    if (isObject(raw)) {
      const { writeKey: _secret, ...fields } = raw
      return JSON.stringify(fields)
    }
    return JSON.stringify(raw ?? null)
  } catch {
    return JSON.stringify({ unstorable: 'the event could not be written as JSON (nested too deep)' })
  }
}

/**
 * Checks one ingest request and turns it into queue rows. The envelope (a JSON object, a known write key, a
 * batch array of at most 2,500 events) is all or nothing; after that, each event that breaks a rule is
 * rejected on its own — not delivered, reported in the answer and kept as a dead letter — and the others are
 * accepted, as Segment's API keeps the good events of a batch. Single-event routes follow the same rule: their
 * event is index 0.
 */
export function acceptRequest(
  route: SegmentRoute,
  body: unknown,
  authorization: string | undefined,
  sources: ReadonlyMap<string, SourceConfig>,
  now: number,
  newMessageId: () => string
): Accepted | IngestError {
  if (!isObject(body)) return refuse(400, 'invalid_body', 'the body must be a JSON object')
  const writeKey = requestWriteKey(body, authorization)
  if (writeKey === undefined)
    return refuse(
      401,
      'missing_write_key',
      'no write key: send it as the HTTP Basic username ("writeKey:") or as "writeKey" in the body'
    )
  const source = sources.get(writeKey)
  if (!source) return refuse(401, 'unknown_write_key', 'unknown write key')

  const isBatch = route === 'batch'
  let raws: unknown[]
  if (isBatch) {
    if (!Array.isArray(body.batch)) return refuse(400, 'invalid_batch', '"batch" must be an array of events')
    if (body.batch.length > SEGMENT_LIMITS.batchEvents) {
      return refuse(
        400,
        'batch_too_long',
        `the batch has ${body.batch.length} events; the limit is ${SEGMENT_LIMITS.batchEvents}`,
        SEGMENT_LIMITS.batchEvents
      )
    }
    raws = body.batch
  } else raws = [body]

  const receivedAt = new Date(now).toISOString()
  const requestSentAt = parseTime(body.sentAt)
  const types: string[] = []
  const events: NewEvent[] = []
  const rejected: RejectedEvent[] = []
  const deadLetters: NewEvent[] = []
  const reject = (index: number, raw: unknown, problem: SegmentEventProblem) => {
    const error = `${isBatch ? `event ${index}` : 'the event'} ${problem.message}`
    rejected.push({ index, code: problem.code, error })
    const messageId = isObject(raw) && isValidMessageId(raw.messageId) ? raw.messageId : newMessageId()
    deadLetters.push({
      messageId,
      sourceName: source.name,
      projectId: source.projectId,
      userKey: '',
      body: rejectedBody(raw),
      receivedAt: now,
      deadReason: `rejected at ingest (${problem.code}): ${error}`
    })
  }

  for (let i = 0; i < raws.length; i++) {
    const raw = raws[i]
    const type = isBatch ? (isObject(raw) ? raw.type : undefined) : route
    const problem = checkSegmentEvent(raw, type)
    if (problem) {
      reject(i, raw, problem)
      continue
    }
    const { writeKey: _secret, ...fields } = raw as Json
    const event: Json = { ...fields, type }
    if (isBatch) {
      if (event.context === undefined && isObject(body.context)) event.context = body.context
      if (event.integrations === undefined && isObject(body.integrations)) event.integrations = body.integrations
    }
    event.messageId ??= newMessageId()
    event.receivedAt = receivedAt
    correctSkew(event, event.sentAt === undefined ? requestSentAt : parseTime(event.sentAt), now)
    // Delivery may happen long after arrival (retries, outages): the event keeps the time it happened.
    event.timestamp ??= event.receivedAt
    const stored = JSON.stringify(event)
    const bytes = Buffer.byteLength(stored)
    if (bytes > SEGMENT_LIMITS.eventBytes + STAMP_ALLOWANCE) {
      reject(i, raw, {
        code: 'event_too_large',
        message: `is over 32 KB (${bytes} bytes as stored); the limit is 32 KB per event`
      })
      continue
    }
    types.push(type as string)
    events.push({
      messageId: event.messageId as string,
      sourceName: source.name,
      projectId: source.projectId,
      // Only an ordering key; NUL is dropped because PostgreSQL text cannot hold it.
      userKey: String(present(event.userId) ? event.userId : event.anonymousId).replace(/\u0000/g, ''),
      body: stored,
      receivedAt: now
    })
  }
  return { source, events, types, rejected, deadLetters }
}
