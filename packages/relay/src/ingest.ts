/**
 * Segment's HTTP Tracking API, as a contract a relay can keep: what is accepted, what is refused (with an
 * error naming the limit and the event), and how accepted events are stamped before they are queued.
 */
import type { SourceConfig } from './config'
import type { NewEvent } from './queue/queue'

export const EVENT_TYPES = ['identify', 'track', 'page', 'screen', 'group', 'alias'] as const
export type EventType = (typeof EVENT_TYPES)[number]
export type IngestRoute = EventType | 'batch' | 'import'

export const INGEST_LIMITS = {
  /** Segment: 32 KB per event (and per single-event request). */
  eventBytes: 32 * 1024,
  /** Segment: 500 KB per batch request. */
  batchRequestBytes: 500 * 1024,
  /** Segment: at most 2,500 events per batch. */
  batchEvents: 2500,
  /** Segment: a messageId you set must be under 100 characters. */
  messageIdChars: 100
} as const

export interface IngestError {
  readonly status: 400 | 401
  readonly body: { readonly error: string; readonly code: string; readonly index?: number; readonly limit?: number }
}

export interface Accepted {
  readonly source: SourceConfig
  readonly events: readonly NewEvent[]
  readonly types: readonly string[]
}

type Json = Record<string, unknown>
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)
const refuse = (status: 400 | 401, code: string, error: string, extra: { index?: number; limit?: number } = {}): IngestError => ({
  status,
  body: { error, code, ...extra }
})

/** The write key from `Authorization: Basic base64(writeKey:)`, or undefined. */
export function writeKeyFromBasic(authorization: string | undefined): string | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization ?? '')
  if (!match) return undefined
  const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8')
  const key = decoded.includes(':') ? decoded.slice(0, decoded.indexOf(':')) : decoded
  return key === '' ? undefined : key
}

const present = (v: unknown) => (typeof v === 'string' && v.trim() !== '') || (typeof v === 'number' && Number.isFinite(v))

/** Segment's clock-skew correction: timestamp = receivedAt − (sentAt − timestamp), when both client clocks are known. */
function correctSkew(event: Json, sentAt: unknown, receivedAt: number): void {
  const sent = typeof sentAt === 'string' ? Date.parse(sentAt) : NaN
  const at = typeof event.timestamp === 'string' ? Date.parse(event.timestamp) : NaN
  if (!Number.isFinite(sent) || !Number.isFinite(at)) return
  event.originalTimestamp ??= event.timestamp
  event.timestamp = new Date(receivedAt - (sent - at)).toISOString()
}

function checkEvent(raw: unknown, index: number | undefined, type: unknown): IngestError | undefined {
  const where = index === undefined ? 'the event' : `event ${index}`
  const at = index === undefined ? {} : { index }
  if (!isObject(raw)) return refuse(400, 'invalid_event', `${where} must be a JSON object`, at)
  if (typeof type !== 'string' || !(EVENT_TYPES as readonly string[]).includes(type)) {
    return refuse(400, 'invalid_type', `${where} has type ${JSON.stringify(type ?? null)}; expected one of ${EVENT_TYPES.join(', ')}`, at)
  }
  if (!present(raw.userId) && !present(raw.anonymousId)) {
    return refuse(400, 'missing_identity', `${where} has neither userId nor anonymousId; send at least one`, at)
  }
  if (type === 'track' && (typeof raw.event !== 'string' || raw.event.trim() === '')) {
    return refuse(400, 'missing_event_name', `${where} is a track without an event name ("event")`, at)
  }
  if (raw.messageId !== undefined && (typeof raw.messageId !== 'string' || raw.messageId === '' || raw.messageId.length >= INGEST_LIMITS.messageIdChars || raw.messageId.includes('\u0000'))) {
    return refuse(400, 'invalid_message_id', `${where} has a messageId that is not a string of 1 to 99 characters (without NUL)`, { ...at, limit: INGEST_LIMITS.messageIdChars })
  }
  return undefined
}

// The fields the relay stamps (type, messageId, receivedAt, timestamp) do not count against the client's 32 KB.
const STAMP_ALLOWANCE = 256

/**
 * Checks one ingest request and turns it into queue rows. The whole request is refused when any event
 * breaks a rule (the error names the rule, the limit and the event index), so nothing is half-accepted.
 */
export function acceptRequest(
  route: IngestRoute,
  body: unknown,
  authorization: string | undefined,
  sources: ReadonlyMap<string, SourceConfig>,
  now: number,
  newMessageId: () => string
): Accepted | IngestError {
  if (!isObject(body)) return refuse(400, 'invalid_body', 'the body must be a JSON object')
  const bodyKey = typeof body.writeKey === 'string' && body.writeKey !== '' ? body.writeKey : undefined
  const writeKey = writeKeyFromBasic(authorization) ?? bodyKey
  if (writeKey === undefined) return refuse(401, 'missing_write_key', 'no write key: send it as the HTTP Basic username ("writeKey:") or as "writeKey" in the body')
  const source = sources.get(writeKey)
  if (!source) return refuse(401, 'unknown_write_key', 'unknown write key')

  let raws: unknown[]
  if (route === 'batch' || route === 'import') {
    if (!Array.isArray(body.batch)) return refuse(400, 'invalid_batch', '"batch" must be an array of events')
    if (body.batch.length > INGEST_LIMITS.batchEvents) {
      return refuse(400, 'batch_too_long', `the batch has ${body.batch.length} events; the limit is ${INGEST_LIMITS.batchEvents}`, { limit: INGEST_LIMITS.batchEvents })
    }
    raws = body.batch
  } else raws = [body]

  const types: string[] = []
  const events: NewEvent[] = []
  for (let i = 0; i < raws.length; i++) {
    const raw = raws[i]
    const index = route === 'batch' || route === 'import' ? i : undefined
    const type = route === 'batch' || route === 'import' ? (isObject(raw) ? raw.type : undefined) : route
    const problem = checkEvent(raw, index, type)
    if (problem) return problem
    const { writeKey: _secret, ...fields } = raw as Json
    const event: Json = { ...fields, type }
    if (route === 'batch' || route === 'import') {
      if (event.context === undefined && isObject(body.context)) event.context = body.context
      if (event.integrations === undefined && isObject(body.integrations)) event.integrations = body.integrations
    }
    event.messageId ??= newMessageId()
    event.receivedAt = new Date(now).toISOString()
    correctSkew(event, event.sentAt ?? body.sentAt, now)
    // Delivery may happen long after arrival (retries, outages): the event keeps the time it happened.
    event.timestamp ??= event.receivedAt
    const stored = JSON.stringify(event)
    const bytes = Buffer.byteLength(stored)
    if (bytes > INGEST_LIMITS.eventBytes + STAMP_ALLOWANCE) {
      const where = index === undefined ? 'the event' : `event ${index}`
      return refuse(400, 'event_too_large', `${where} is over 32 KB (${bytes} bytes as stored); the limit is 32 KB per event`, { ...(index !== undefined && { index }), limit: INGEST_LIMITS.eventBytes })
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
  return { source, events, types }
}
