import type { Clock, SendLimiter } from '../rate-limiter'

/** An event accepted at ingest, as the queue stores it. */
export interface NewEvent {
  readonly messageId: string
  readonly sourceName: string
  /** Non-secret id of the 1Flow project the source delivers to. */
  readonly projectId: string
  /** userId or anonymousId: a user's events are delivered in order. */
  readonly userKey: string
  /** The stamped Segment event, as JSON (never containing a write key). */
  readonly body: string
  readonly receivedAt: number
  /**
   * When this event's dedup window starts counting (default `receivedAt`). Set later than `receivedAt` to
   * remember a messageId for longer than the window: 1Flow retries a webhook for 3 days.
   */
  readonly dedupFrom?: number
}

/** A queued event leased for delivery. */
export interface Job {
  readonly id: number
  readonly messageId: string
  readonly sourceName: string
  readonly projectId: string
  readonly userKey: string
  readonly body: string
  readonly receivedAt: number
  readonly attempts: number
  readonly firstAttemptAt: number | null
}

export interface DeadLetterInfo {
  readonly reason: string
  /** 1Flow's HTTP status, when 1Flow refused it. */
  readonly status?: number
  /** 1Flow's response body (truncated), when there was one. */
  readonly response?: string
}

export interface DeadLetter extends DeadLetterInfo {
  readonly id: number
  readonly messageId: string
  readonly sourceName: string
  readonly projectId: string
  readonly body: string
  readonly attempts: number
  readonly deadAt: number
}

export interface QueueStats {
  readonly pending: number
  readonly leased: number
  /** Pending events waiting for a retry time still in the future. */
  readonly retrying: number
  readonly dead: number
  /** Age in ms of the oldest event not yet delivered (pending or leased); 0 when empty. */
  readonly oldestAgeMs: number
  readonly bytes: number
}

export interface EnqueueResult {
  readonly accepted: number
  /** Events whose messageId was seen within the dedup window: acknowledged, not queued again. */
  readonly duplicates: number
}

export type Selection = readonly number[] | 'all'

/**
 * The relay's durable queue. Implemented by SQLite (one machine) and PostgreSQL (several relays on one
 * database); one conformance suite runs against both.
 */
export interface Queue {
  /** Durably stores new events (resolves only after they are committed), dropping messageIds its source sent within the dedup window. */
  enqueue(events: readonly NewEvent[]): Promise<EnqueueResult>
  /**
   * Leases up to `limit` ready events of one project, oldest first, skipping every user who has an event in
   * flight or waiting for a retry (so a user's later events wait behind an earlier one). Leases expire.
   */
  lease(projectId: string, limit: number, leaseMs: number, now: number): Promise<Job[]>
  /** Delivered (or deliberately skipped): gone from the queue. */
  complete(ids: readonly number[]): Promise<void>
  /** Back to ready without counting an attempt (nothing was tried: shutdown, auth pause, unsent rest of a lease). */
  release(ids: readonly number[], readyAt: number): Promise<void>
  /** A failed attempt: counted, retried at `nextAttemptAt`. */
  retry(ids: readonly number[], nextAttemptAt: number, error: string, now: number): Promise<void>
  deadLetter(ids: readonly number[], info: DeadLetterInfo, now: number): Promise<void>
  /** Leases that expired (a crashed worker's) become ready again; returns how many. */
  recoverLeases(now: number): Promise<number>
  /** Forgets messageIds seen before `before` (the dedup window). */
  pruneDedup(before: number): Promise<number>
  stats(now: number): Promise<QueueStats>
  /** Size of the queue's storage, for the disk cap. */
  sizeBytes(): Promise<number>
  listDead(options?: { limit?: number; sourceName?: string }): Promise<DeadLetter[]>
  /** Dead letters back to ready, attempts reset; returns how many. */
  replayDead(selection: Selection, now: number): Promise<number>
  purgeDead(selection: Selection): Promise<number>
  /**
   * A request limiter shared by every relay on this queue, when the queue can share one (PostgreSQL); relays
   * on a local queue pace themselves.
   */
  sharedLimiter?(projectId: string, maxPerSecond: number, options: { readonly inFlightMs: number; readonly clock: Clock }): SendLimiter
  /** Throws when the queue cannot take writes (readiness). */
  checkWritable(): Promise<void>
  close(): Promise<void>
}

/**
 * What deduplication compares: the messageId within its source. Segment dedups per workspace; a relay serving
 * several apps must not let one app's messageIds suppress another's.
 * (Source names cannot contain "|", so the key is unambiguous.)
 */
export function dedupKey(event: Pick<NewEvent, 'sourceName' | 'messageId'>): string {
  return `${event.sourceName}|${event.messageId}`
}
