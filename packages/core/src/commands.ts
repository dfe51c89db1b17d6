import type { JsonObject } from './json-value.js'

/** Create or update a user in 1Flow (web SDK `logUser`, HTTP `POST /identify`). */
export interface IdentifyCommand {
  readonly kind: 'identify'
  readonly userId: string
  readonly traits: JsonObject
  /** When it happened, as the event gave it (string or Date); the HTTP contract sends it as ISO-8601. */
  readonly timestamp?: string | Date
}

/** Record an event in 1Flow (web SDK `logEvent`, HTTP `POST /track`). */
export interface TrackCommand {
  readonly kind: 'track'
  readonly event: string
  readonly properties: JsonObject
  readonly userId?: string
  readonly anonymousId?: string
  /** When it happened, as the event gave it (string or Date); the HTTP contract sends it as ISO-8601. */
  readonly timestamp?: string | Date
}

/** A runtime-neutral instruction for 1Flow; adapters turn it into an SDK call or an HTTP request. */
export type Command = IdentifyCommand | TrackCommand

export type SkipReason =
  /** identify without a usable User ID: Segment's documentation of the destination says such calls are not sent. */
  | 'missing-user-id'
  /** no preset or subscription matches the event (for example page, group or alias without a mapping). */
  | 'not-subscribed'
  /** the event's `integrations` object turns 1Flow off. */
  | 'disabled-by-integrations'
  /** the event's consent preferences do not grant a category 1Flow needs (the consentCategories setting). */
  | 'no-consent'

/** An event deliberately not sent, with the reason; adapters count or log it, never treat it as an error. */
export interface Skip {
  readonly kind: 'skip'
  readonly reason: SkipReason
  readonly message: string
}

export function skip(reason: SkipReason, message: string): Skip {
  return { kind: 'skip', reason, message }
}

/** Extra facts from the event (not mapped fields) that a command may carry. */
export interface CommandContext {
  /** The event's timestamp (ISO string or Date); anything else is ignored. */
  readonly timestamp?: unknown
}

/** The context's timestamp if it is of a kind a command carries (normalised later, only where it is sent). */
export function commandTimestamp(context: CommandContext): string | Date | undefined {
  const t = context.timestamp
  return typeof t === 'string' || t instanceof Date ? t : undefined
}

// Already canonical (what Date#toISOString produces, as Segment libraries send it): no need to parse.
const CANONICAL_ISO = /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z$/

/** Normalises an event timestamp to ISO-8601, or undefined when it is absent or unparseable. */
export function toTimestamp(value: unknown): string | undefined {
  let ms: number
  if (typeof value === 'string') {
    if (CANONICAL_ISO.test(value)) return value
    ms = Date.parse(value)
  } else if (value instanceof Date) ms = value.getTime()
  else return undefined
  return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined
}
