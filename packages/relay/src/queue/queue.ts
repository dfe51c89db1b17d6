import { OneFlowError } from '@oneflow-seg/core'
import type { Clock, SendLimiter } from '../rate-limiter'
import { projectOf } from './buckets'

/** An event accepted at ingest (or from a 1Flow webhook), as the queue stores it. */
export interface NewEvent {
  readonly messageId: string
  readonly sourceName: string
  /** The lane it is delivered on: a 1Flow project's non-secret id, or a Segment target's (`segment-…`). */
  readonly projectId: string
  /** userId or anonymousId: a user's events are delivered in order. */
  readonly userKey: string
  /** The Segment event, as JSON (never containing a write key). */
  readonly body: string
  readonly receivedAt: number
  /**
   * When this event's dedup window starts counting (default `receivedAt`). Set later than `receivedAt` to
   * remember a messageId for longer than the window: 1Flow retries a webhook for 3 days.
   */
  readonly dedupFrom?: number
  /**
   * Where the messageId comes from: a client (default), or the relay itself, derived from a 1Flow webhook.
   * The two never share dedup keys: a client cannot suppress a webhook by sending its id first.
   */
  readonly origin?: 'client' | 'webhook'
  /** Stored straight into the dead-letter store with this reason (an event rejected at ingest); not deduplicated. */
  readonly deadReason?: string
}

/** A queued event leased for delivery. */
export interface Job extends Omit<NewEvent, 'dedupFrom' | 'origin' | 'deadReason'> {
  /**
   * The queue lane it is in: its project, or on a PostgreSQL queue with buckets its project's bucket (`<project>#<n>`,
   * see buckets.ts). Settles and renewals name it back as it is; the deliverer knows the project from its lease.
   */
  readonly projectId: string
  readonly id: number
  readonly attempts: number
  readonly firstAttemptAt: number | null
  /**
   * The lease that took it: a token written with the lease and checked by every write the lease's holder makes
   * for it (settles, renewals). Once the lease expired and was taken back, the token no longer matches and such a
   * write changes nothing. See docs/relay-queue.md.
   */
  readonly lease?: number
}

/**
 * An event as a settle or renewal names it: a leased job (fenced by its lease: the write changes nothing once
 * that lease is no longer current), or a bare id (not fenced: for tools that own the queue, such as tests).
 */
export type JobRef = number | Pick<Job, 'id' | 'lease' | 'projectId'>

/** A random lease token (48 bits: exact in a JS number and in SQLite/PostgreSQL integers). */
export function newLeaseToken(): number {
  return Math.floor(Math.random() * 2 ** 48) + 1
}

/** Refs split by fence: bare ids, and per lease token its project and ids. */
export function splitRefs(refs: readonly JobRef[]): {
  bare: number[]
  leases: Map<number, { projectId: string; ids: number[] }>
} {
  const bare: number[] = []
  const leases = new Map<number, { projectId: string; ids: number[] }>()
  for (const ref of refs) {
    if (typeof ref === 'number' || ref.lease === undefined) {
      bare.push(typeof ref === 'number' ? ref : ref.id)
      continue
    }
    let entry = leases.get(ref.lease)
    if (!entry) leases.set(ref.lease, (entry = { projectId: ref.projectId, ids: [] }))
    entry.ids.push(ref.id)
  }
  return { bare, leases }
}

export interface DeadLetterInfo {
  readonly reason: string
  /** The service's HTTP status (1Flow's or Segment's), when it refused the event. */
  readonly status?: number
  /** The service's response body (truncated), when there was one. */
  readonly response?: string
  /** The event was sent and refused (or its last retry failed): that send counts as an attempt. */
  readonly sent?: boolean
}

export interface DeadLetter extends Job, DeadLetterInfo {
  readonly deadAt: number
}

/** A row of the events table; SQLite and PostgreSQL use the same column names. */
export type EventRow = Record<string, unknown>

/**
 * A user's ordering key as the queues store it: without NUL (PostgreSQL text cannot hold it) and with lone UTF-16
 * surrogates as U+FFFD. The databases store a lone surrogate as bytes they read back as U+FFFD, so two users whose
 * ids differ only there ("\ud800", "\ud801") would be stored apart but read back as one, and a lease could then
 * put two of one user's events in flight. Made well-formed first, they are one user, ordered together (safe:
 * an ordering key only ever adds waiting). The event's body keeps the id as sent.
 */
export function orderingKey(value: string): string {
  return value
    .replace(/\u0000/g, '')
    .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd')
}

export function rowToJob(r: EventRow): Job {
  return {
    id: Number(r.id),
    messageId: String(r.message_id),
    sourceName: String(r.source_name),
    projectId: String(r.project_id),
    userKey: String(r.user_key),
    body: String(r.body),
    receivedAt: Number(r.received_at),
    attempts: Number(r.attempts),
    firstAttemptAt: r.first_attempt_at == null ? null : Number(r.first_attempt_at),
    ...(r.lease_token != null && r.state === 'leased' && { lease: Number(r.lease_token) })
  }
}

export function rowToDeadLetter(r: EventRow): DeadLetter {
  return {
    ...rowToJob(r),
    // Its project, as a bucket's lane is named after it (PostgreSQL, buckets.ts).
    projectId: projectOf(String(r.project_id)),
    reason: String(r.dead_reason ?? ''),
    ...(r.dead_status != null && { status: Number(r.dead_status) }),
    ...(r.dead_response != null && { response: String(r.dead_response) }),
    deadAt: Number(r.dead_at)
  }
}

/** The database refused what one request holds (not the database failing): answer it 400, retrying cannot help. */
export class UnstorableEventsError extends OneFlowError {
  override readonly name = 'UnstorableEventsError'
  readonly code = 'UNSTORABLE_EVENTS'
  readonly remedy = 'fix-payload'
  constructor(override readonly cause: unknown) {
    super(`the queue refused these events: ${cause instanceof Error ? cause.message : String(cause)}`.slice(0, 300))
  }
}

/**
 * A stored row of a lane that cannot be read (a damaged file, or a bug): the lane's delivery stops at it, nothing is
 * dropped, and other lanes go on (the deliverer tries that lane's leases again once a second, and goes on sending).
 */
export class InboxRowError extends OneFlowError {
  override readonly name = 'InboxRowError'
  readonly code = 'QUEUE_INBOX_ROW_UNREADABLE'
  readonly remedy = 'fix-payload'
  constructor(where: string, id: number, lane: string, cause: unknown) {
    super(
      `inbox row ${id} of ${where} (lane ${lane}) cannot be read (${cause instanceof Error ? cause.message : String(cause)}); this lane's delivery stops at it, and nothing is dropped. Copy the file and report this; other lanes go on`
    )
  }
}

/**
 * Group commit, for both queues: enqueues that arrive within `windowMs` (or until `maxEvents` wait) are
 * written together by `write` — one transaction, one fsync — and each caller then gets its own answer.
 * Writes run one after another, never overlapping.
 */
export class GroupCommit {
  private waiting: Array<{
    events: readonly NewEvent[]
    resolve(result: EnqueueResult): void
    reject(error: unknown): void
  }> = []
  private waitingEvents = 0
  private timer: NodeJS.Timeout | undefined
  private writing: Promise<void> = Promise.resolve()

  constructor(
    /** Writes the requests in one transaction; returns each request's result, in order. */
    private readonly write: (
      requests: ReadonlyArray<readonly NewEvent[]>
    ) => EnqueueResult[] | Promise<EnqueueResult[]>,
    private readonly windowMs: number,
    private readonly maxEvents: number,
    /**
     * True when a failed write was caused by what one request held (a value the database refuses), not by the
     * database: the requests are then written one by one, so only the culprit fails and the others commit.
     */
    private readonly causedByData: (error: unknown) => boolean = () => false
  ) {}

  add(events: readonly NewEvent[]): Promise<EnqueueResult> {
    if (events.length === 0) return Promise.resolve({ accepted: 0, duplicates: 0 })
    return new Promise((resolve, reject) => {
      this.waiting.push({ events, resolve, reject })
      this.waitingEvents += events.length
      if (this.waitingEvents >= this.maxEvents) this.flush()
      else this.timer ??= setTimeout(() => this.flush(), this.windowMs)
    })
  }

  /** Writes whatever waits now; resolves once every write so far is done. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    const batch = this.waiting
    this.waiting = []
    this.waitingEvents = 0
    if (batch.length > 0) {
      this.writing = this.writing.then(async () => {
        try {
          const results = await this.write(batch.map((w) => w.events))
          batch.forEach((w, i) => w.resolve(results[i] as EnqueueResult))
        } catch (error) {
          if (!this.causedByData(error)) {
            // The database itself failed (down, hung, disk full): requests that queued up behind this write
            // would only wait their turn to fail, one timeout each. They fail now, and are answered 503.
            const behind = this.waiting
            this.waiting = []
            this.waitingEvents = 0
            if (this.timer) clearTimeout(this.timer)
            this.timer = undefined
            for (const w of [...batch, ...behind]) w.reject(error)
            return
          }
          if (batch.length === 1) {
            batch[0]?.reject(new UnstorableEventsError(error))
            return
          }
          for (const w of batch) {
            try {
              w.resolve((await this.write([w.events]))[0] as EnqueueResult)
            } catch (own) {
              w.reject(this.causedByData(own) ? new UnstorableEventsError(own) : own)
            }
          }
        }
      })
    }
    return this.writing
  }
}

/** A lease candidate: a ready event and its user. */
export interface Candidate {
  readonly id: number
  readonly userKey: string
}

/** What the queue knows about a user with a ready event. */
export interface UserState {
  /** An earlier event of the user is in flight (leased) or waiting for a retry time still in the future. */
  readonly blocked: boolean
  /** The user has events parked as `held` (behind an event that blocked them). */
  readonly held: boolean
}

/** How many rounds of candidates one lease call looks at before it answers (each round parks what it cannot take). */
export const LEASE_ROUNDS = 8

/**
 * One round of a lease, for both drivers. Ready candidates of a blocked user are parked as `held`, so a long
 * backlog behind one failing event is looked at once, not on every lease. A user with held events and no
 * blocker any more (its retry time has come) gets them back as pending first, and none of its events is taken
 * this round: the next round sees them all again in order. Everyone else's candidates are leased.
 */
export function sortCandidates(
  candidates: readonly Candidate[],
  stateOf: (userKey: string) => UserState
): { lease: number[]; hold: number[]; unhold: string[] } {
  const lease: number[] = []
  const hold: number[] = []
  const unhold: string[] = []
  const decided = new Map<string, 'lease' | 'hold' | 'skip'>()
  for (const c of candidates) {
    let verdict = decided.get(c.userKey)
    if (verdict === undefined) {
      const state = stateOf(c.userKey)
      verdict = state.blocked ? 'hold' : state.held ? 'skip' : 'lease'
      if (verdict === 'skip') unhold.push(c.userKey)
      decided.set(c.userKey, verdict)
    }
    if (verdict === 'lease') lease.push(c.id)
    else if (verdict === 'hold') hold.push(c.id)
  }
  return { lease, hold, unhold }
}

export interface QueueStats {
  /** Events waiting to be delivered (held behind an earlier event of their user included). */
  readonly pending: number
  readonly leased: number
  /** Pending events that failed a send before (waiting for their retry, or for their turn after it). */
  readonly retrying: number
  readonly dead: number
  /** Age in ms of the oldest event not yet delivered (pending or leased); 0 when empty. */
  readonly oldestAgeMs: number
  /** Live data in the queue (queued events and dead letters), what the disk cap compares. */
  readonly bytes: number
  /** Events not yet delivered (pending, held or leased), per lane id. */
  readonly lanes: Readonly<Record<string, number>>
  /** Dead letters on their own: how many, their size, the oldest's age. */
  readonly deadLetters: { readonly count: number; readonly bytes: number; readonly oldestAgeMs: number }
}

/** What a dead-letter clean-up removed. */
export interface PruneResult {
  /** Older than the retention period. */
  readonly expired: number
  /** The oldest, removed to bring dead letters back under their size limit. */
  readonly overSize: number
}

export interface EnqueueResult {
  readonly accepted: number
  /** Events whose messageId was seen within the dedup window: acknowledged, not queued again. */
  readonly duplicates: number
}

export type Selection = readonly number[] | 'all'

export interface ListDeadOptions {
  readonly limit?: number
  readonly sourceName?: string
  readonly afterId?: number
}

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
  /**
   * Extends the leases of `jobs` to `leaseUntil` while their holder works on them; returns the ids still held by
   * those leases (the others were taken back: their holder must not send them).
   */
  renew(jobs: readonly JobRef[], leaseUntil: number): Promise<number[]>
  /** Delivered (or deliberately skipped): gone from the queue. Fenced: see JobRef (so are the settles below). */
  complete(jobs: readonly JobRef[]): Promise<void>
  /** Back to ready without counting an attempt (nothing was tried: shutdown, auth pause, unsent rest of a lease). */
  release(jobs: readonly JobRef[], readyAt: number): Promise<void>
  /** A failed attempt: counted, retried at `nextAttemptAt`. */
  retry(jobs: readonly JobRef[], nextAttemptAt: number, error: string, now: number): Promise<void>
  deadLetter(jobs: readonly JobRef[], info: DeadLetterInfo, now: number): Promise<void>
  /**
   * Leases that expired (a crashed or frozen worker's) become ready again, in one guarded write per lane (only
   * rows still leased and expired); events held behind a user with nothing in flight any more are made ready
   * too. Returns how many leases were taken back.
   */
  recoverLeases(now: number): Promise<number>
  /** Forgets messageIds seen before `before` (the dedup window). */
  pruneDedup(before: number): Promise<number>
  stats(now: number): Promise<QueueStats>
  /**
   * Bytes of live data (queued events and dead letters; not free space the storage has not given back yet),
   * for the disk cap. Cheap enough to ask on every request.
   */
  liveBytes(): Promise<number>
  /** Removes dead letters that died before `deadBefore`, then the oldest until they take at most `maxBytes`. */
  pruneDead(deadBefore: number, maxBytes: number): Promise<PruneResult>
  /** Gives free space back to the file system (SQLite: incremental vacuum, WAL truncation); a no-op where the database does it. */
  compact(): Promise<void>
  /** Dead letters in id order: at most `limit`, only `sourceName`'s, only ids above `afterId` (to page through them). */
  listDead(options?: ListDeadOptions): Promise<DeadLetter[]>
  /** Dead letters back to ready, attempts reset; returns how many. */
  replayDead(selection: Selection, now: number): Promise<number>
  purgeDead(selection: Selection): Promise<number>
  /**
   * A request limiter shared by every relay on this queue, when the queue can share one (PostgreSQL); relays
   * on a local queue pace themselves.
   */
  sharedLimiter?(
    projectId: string,
    maxPerSecond: number,
    options: { readonly inFlightMs: number; readonly clock: Clock }
  ): SendLimiter
  /** Why ingest must wait for room on the queue's disk (it filled up), or undefined; queues without a disk of their own omit it. */
  spaceProblem?(): string | undefined
  /**
   * Why delivery of some lane waits for something outside the relays, or undefined (PostgreSQL: a write transaction
   * left open elsewhere on the server, past which no owner reads its inbox; docs/relay-queue.md).
   */
  deliveryHeldBack?(): string | undefined
  /**
   * 1Flow asked that nothing more be sent on a lane before `until` (Retry-After, or failures in a row): kept for the
   * relays that may own the lane after this one, which lease none of its events before then (PostgreSQL). A local
   * queue has one relay, whose deliverer keeps the pause itself, and omits it.
   */
  pauseLane?(lane: string, until: number): Promise<void>
  /** A real, small write: throws when the queue cannot take writes (readiness, and the probe of a failing queue). */
  checkWritable(): Promise<void>
  close(): Promise<void>
}

/**
 * What deduplication compares: the messageId within its source and origin. Segment dedups per workspace; a relay serving
 * several apps must not let one app's messageIds suppress another's.
 * (Source names cannot contain "|", so the key is unambiguous.)
 */
export function dedupKey(event: Pick<NewEvent, 'sourceName' | 'messageId' | 'origin'>): string {
  // "webhook:" cannot start a source name (no ":" allowed), so the namespaces cannot meet.
  return event.origin === 'webhook'
    ? `webhook:${event.sourceName}|${event.messageId}`
    : `${event.sourceName}|${event.messageId}`
}
