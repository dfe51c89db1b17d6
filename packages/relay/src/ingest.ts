/**
 * Segment's HTTP Tracking API, as a contract a relay can keep: which requests are refused whole (the
 * envelope), which events are rejected one by one while the rest are kept, and how accepted events are
 * stamped before they are queued. The rules themselves are core's (`checkSegmentEvent`, `SEGMENT_LIMITS`).
 */
import {
  checkSegmentEvent,
  exceedsDepth,
  isValidMessageId,
  MAX_DEPTH,
  SEGMENT_LIMITS,
  type SegmentEventProblem,
  type SegmentRoute
} from '@oneflow-seg/core'
import type { SourceConfig } from './config'
import { orderingKey, type NewEvent } from './queue/queue'

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

/** The largest time a JavaScript Date (and so an ISO-8601 string from one) can hold, in ms either side of 1970. */
const MAX_TIME_MS = 8.64e15

/**
 * Segment's clock-skew correction: timestamp = receivedAt − (sentAt − timestamp), when both client clocks are
 * known. False when the corrected time is not a date at all (the two client times are too far apart).
 */
function correctSkew(event: Json, sent: number, receivedAt: number): boolean {
  const at = parseTime(event.timestamp)
  if (!Number.isFinite(sent) || !Number.isFinite(at)) return true
  const corrected = receivedAt - (sent - at)
  if (!(Math.abs(corrected) <= MAX_TIME_MS)) return false
  event.originalTimestamp ??= event.timestamp
  event.timestamp = new Date(corrected).toISOString()
  return true
}

// The fields the relay stamps (type, messageId, receivedAt, timestamp) do not count against the client's 32 KB.
export const STAMP_ALLOWANCE = 256

/**
 * What one request may store: twice its decoded body, plus the stamps of its events. Only a batch-level
 * `context` or `integrations` copied into many events can pass it (a 32 KB context and 2,500 tiny events would
 * store 80 MB from 1 KB of gzip); such a request is refused whole. See docs/relay-ingest.md.
 */
export const STORED_PER_DECODED_BYTE = 2

/** The write key of a request: HTTP Basic first, then `writeKey` in the body (analytics.js sends both). */
export function requestWriteKey(body: unknown, authorization: string | undefined): string | undefined {
  const fromBody =
    isObject(body) && typeof body.writeKey === 'string' && body.writeKey !== '' ? body.writeKey : undefined
  return writeKeyFromBasic(authorization) ?? fromBody
}

/**
 * An event that was rejected, as JSON for the dead-letter store (never throws, never holds the write key). A
 * single-event route's type (its path) is written in, so a replay reads the event as it was sent.
 */
function rejectedBody(raw: unknown, routeType?: string): string {
  try {
    if (isObject(raw)) {
      const { writeKey: _secret, ...fields } = raw
      return JSON.stringify(
        routeType !== undefined && fields.type === undefined ? { ...fields, type: routeType } : fields
      )
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
  newMessageId: () => string,
  options: {
    /** The body's size once decoded, in bytes (default: its size as JSON). */
    readonly decodedBytes?: number | undefined
    /**
     * History (`oneflow-relay import`): each event keeps its own `timestamp` and `receivedAt`. The clock-skew
     * correction, which moves a live event's time by the client's clock error against now, does not apply.
     */
    readonly historical?: boolean
  } = {}
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

  // A batch's own context and integrations go to each event that has none: checked once here (not once per
  // copy), and their copies count toward what the request may store.
  const shared = isBatch ? sharedFields(body) : { fields: {}, bytes: 0, tooDeep: false }
  if (shared.bytes > 0) {
    const decodedBytes = options.decodedBytes ?? jsonLength(body)
    const copies = raws.filter(
      (raw) => isObject(raw) && Object.keys(shared.fields).some((k) => raw[k] === undefined)
    ).length
    const stored = decodedBytes + Math.max(0, copies - 1) * shared.bytes
    const allowed = STORED_PER_DECODED_BYTE * decodedBytes
    if (stored > allowed) {
      return refuse(
        400,
        'shared_context_too_large',
        `the batch's top-level context/integrations (${shared.bytes} bytes) would be copied into ${copies} events: ${stored} bytes stored for a ${decodedBytes}-byte request, more than ${STORED_PER_DECODED_BYTE}× its size; send context with each event, or keep the batch's shared part small`,
        allowed
      )
    }
  }

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
      body: rejectedBody(raw, isBatch ? undefined : route),
      receivedAt: now,
      deadReason: `rejected at ingest (${problem.code}): ${error}`
    })
  }

  for (let i = 0; i < raws.length; i++) {
    const raw = raws[i]
    // Whatever one event holds, it is that event's problem: anything thrown while checking or stamping it
    // rejects it alone, never the request (whose other events are then kept).
    try {
      const problem = acceptEvent(raw, isBatch ? (isObject(raw) ? raw.type : undefined) : route)
      if ('code' in problem) reject(i, raw, problem)
      else {
        types.push(problem.type)
        events.push(problem.event)
      }
    } catch (error) {
      reject(i, raw, {
        code: 'invalid_event',
        message: `could not be read (${error instanceof RangeError ? 'nested too deep' : 'malformed'})`
      })
    }
  }
  return { source, events, types, rejected, deadLetters }

  function acceptEvent(raw: unknown, type: unknown): SegmentEventProblem | { type: string; event: NewEvent } {
    const problem = checkSegmentEvent(raw, type)
    if (problem) return problem
    const { writeKey: _secret, ...fields } = raw as Json
    const event: Json = { ...fields, type }
    for (const [key, value] of Object.entries(shared.fields)) {
      if (event[key] !== undefined) continue
      if (shared.tooDeep)
        return {
          code: 'too_deep',
          message: `gets the batch's ${key}, which is nested more than ${MAX_DEPTH} levels deep`
        }
      event[key] = value
    }
    event.messageId ??= newMessageId()
    if (options.historical) event.receivedAt ??= receivedAt
    else {
      event.receivedAt = receivedAt
      if (!correctSkew(event, event.sentAt === undefined ? requestSentAt : parseTime(event.sentAt), now))
        return {
          code: 'invalid_timestamp',
          message:
            'has a timestamp and sentAt so far apart that the corrected time is not a date; check the client clock'
        }
    }
    // Delivery may happen long after arrival (retries, outages): the event keeps the time it happened.
    event.timestamp ??= event.receivedAt
    const stored = JSON.stringify(event)
    const bytes = Buffer.byteLength(stored)
    if (bytes > SEGMENT_LIMITS.eventBytes + STAMP_ALLOWANCE)
      return {
        code: 'event_too_large',
        message: `is over 32 KB (${bytes} bytes as stored); the limit is 32 KB per event`
      }
    return {
      type: type as string,
      event: {
        messageId: event.messageId as string,
        sourceName: (source as SourceConfig).name,
        projectId: (source as SourceConfig).projectId,
        userKey: orderingKey(String(present(event.userId) ? event.userId : event.anonymousId)),
        body: stored,
        receivedAt: now
      }
    }
  }
}

/** A batch's top-level `context` and `integrations` (objects only), their size as JSON, and whether they nest too deep. */
function sharedFields(body: Json): { fields: Json; bytes: number; tooDeep: boolean } {
  const fields: Json = {}
  for (const key of ['context', 'integrations'] as const) if (isObject(body[key])) fields[key] = body[key]
  // One level is the event itself: the shared part may nest one level less than an event.
  const tooDeep = Object.values(fields).some((v) => exceedsDepth(v, MAX_DEPTH - 1))
  return { fields, bytes: tooDeep ? 0 : Object.keys(fields).length === 0 ? 0 : jsonLength(fields), tooDeep }
}

/** A value's size as JSON in bytes (0 when it cannot be written as JSON). */
function jsonLength(value: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(value) ?? '')
  } catch {
    return 0
  }
}

/**
 * Whether a stored event (a dead letter's body) would be accepted at ingest today: undefined, or the problem
 * ingest would report. `oneflow-relay dlq replay` checks each dead letter with it before putting it back.
 */
export function recheckEvent(body: string): SegmentEventProblem | undefined {
  let event: unknown
  try {
    event = JSON.parse(body)
  } catch {
    return { code: 'invalid_event', message: 'is not valid JSON' }
  }
  if (!isObject(event)) return { code: 'invalid_event', message: 'must be a JSON object' }
  try {
    const problem = checkSegmentEvent(event, event.type)
    if (problem) return problem
  } catch {
    return { code: 'invalid_event', message: 'could not be read' }
  }
  const bytes = Buffer.byteLength(body)
  if (bytes > SEGMENT_LIMITS.eventBytes + STAMP_ALLOWANCE)
    return {
      code: 'event_too_large',
      message: `is over 32 KB (${bytes} bytes as stored); the limit is 32 KB per event`
    }
  return undefined
}
