/**
 * Segment's HTTP Tracking API on the wire, defined once: the paths its clients POST to, its limits, the rules an
 * event must meet, and the batch body. The relay receives this API (ingest) and sends it (1Flow survey
 * responses to Segment); testkit's stand-in for Segment enforces it. Sources: Segment's HTTP API doc, and what
 * its clients send (analytics.js posts to the short paths `/v1/t`, `/v1/b`, …; the mobile libraries to
 * `/v1/import`, which Segment treats as `/v1/batch`).
 */
import { describe, exceedsDepth, MAX_DEPTH } from './json-value.js'

export const SEGMENT_EVENT_TYPES = ['identify', 'track', 'page', 'screen', 'group', 'alias'] as const
export type SegmentEventType = (typeof SEGMENT_EVENT_TYPES)[number]

export const SEGMENT_LIMITS = {
  /** 32 KB per event, and per single-event request. */
  eventBytes: 32 * 1024,
  /** 500 KB per batch request. */
  batchRequestBytes: 500 * 1024,
  /** At most 2,500 events per batch. */
  batchEvents: 2500,
  /** What a sender packs a batch to, leaving room under 500 KB (as Segment's own clients do). */
  batchPackBytes: 480 * 1024,
  /** A messageId a client sets must be shorter than this. */
  messageIdChars: 100
} as const

/** Segment's API for US workspaces; EU workspaces use https://events.eu1.segmentapis.com. */
export const SEGMENT_DEFAULT_HOST = 'https://api.segment.io'

/** What a path under `/v1/` means: one event of a type, or a batch. */
export type SegmentRoute = SegmentEventType | 'batch'

/**
 * Every path under `/v1/` that Segment's clients send events to: the documented names, analytics.js's short
 * forms (`t`, `i`, `p`, …, `b` for its batching delivery), and `import`, which the mobile libraries use.
 */
export const SEGMENT_PATHS: Readonly<Record<string, SegmentRoute>> = {
  identify: 'identify',
  i: 'identify',
  track: 'track',
  t: 'track',
  page: 'page',
  p: 'page',
  screen: 'screen',
  s: 'screen',
  group: 'group',
  g: 'group',
  alias: 'alias',
  a: 'alias',
  batch: 'batch',
  b: 'batch',
  import: 'batch'
}

/** Why an event breaks Segment's rules; `message` completes "event 3 …" or "the event …". */
export interface SegmentEventProblem {
  readonly code:
    | 'invalid_event'
    | 'invalid_type'
    | 'missing_identity'
    | 'missing_event_name'
    | 'invalid_message_id'
    | 'too_deep'
    | 'event_too_large'
    | 'invalid_timestamp'
  readonly message: string
}

type Json = Record<string, unknown>
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)
const present = (v: unknown) =>
  (typeof v === 'string' && v.trim() !== '') || (typeof v === 'number' && Number.isFinite(v))

/** True when `value` is a messageId Segment accepts: a string of 1 to 99 characters, without NUL. */
export function isValidMessageId(value: unknown): value is string {
  return (
    typeof value === 'string' &&
    value !== '' &&
    value.length < SEGMENT_LIMITS.messageIdChars &&
    !value.includes('\u0000')
  )
}

/**
 * Checks one event against Segment's rules (size is the caller's: it depends on what the caller adds). `type`
 * is the event's type: its own `type` in a batch, the path's on a single-event route.
 */
export function checkSegmentEvent(raw: unknown, type: unknown): SegmentEventProblem | undefined {
  if (!isObject(raw)) return { code: 'invalid_event', message: 'must be a JSON object' }
  if (typeof type !== 'string' || !(SEGMENT_EVENT_TYPES as readonly string[]).includes(type)) {
    return {
      code: 'invalid_type',
      // Only a string is quoted (cut short): any other value is named by its kind, never written out, so a
      // type nested thousands of levels deep costs nothing here.
      message: `has type ${typeof type === 'string' ? JSON.stringify(type.slice(0, 40)) : describe(type ?? null)}; expected one of ${SEGMENT_EVENT_TYPES.join(', ')}`
    }
  }
  if (!present(raw.userId) && !present(raw.anonymousId))
    return { code: 'missing_identity', message: 'has neither userId nor anonymousId; send at least one' }
  if (type === 'track' && (typeof raw.event !== 'string' || raw.event.trim() === ''))
    return { code: 'missing_event_name', message: 'is a track without an event name ("event")' }
  if (raw.messageId !== undefined && !isValidMessageId(raw.messageId)) {
    return {
      code: 'invalid_message_id',
      message: `has a messageId that is not a string of 1 to ${SEGMENT_LIMITS.messageIdChars - 1} characters (without NUL)`
    }
  }
  if (exceedsDepth(raw, MAX_DEPTH))
    return { code: 'too_deep', message: `is nested more than ${MAX_DEPTH} levels deep; flatten it` }
  return undefined
}

/** The body of a `/v1/batch` request from events already serialized as JSON. */
export function segmentBatchBody(eventsJson: readonly string[], sentAt: string): string {
  return `{"batch":[${eventsJson.join(',')}],"sentAt":${JSON.stringify(sentAt)}}`
}
