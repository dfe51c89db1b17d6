import pg from 'pg'
import {
  countDone,
  type EventRowFields,
  InboxPlacement,
  type Flying,
  type FlyingOutcome,
  INBOX_ID_BASE,
  INBOX_SLOT,
  type InboxEvent,
  type InboxRow,
  isDone,
  leasedJob,
  markDone,
  nextMarks,
  resolveRefs,
  unpackInbox
} from './inbox'
import { InboxRowError, LEASE_ROUNDS, newLeaseToken, type Job, type JobRef } from './queue'
import { projectOf } from './buckets'

/**
 * A lane's owner on PostgreSQL (docs/relay-queue.md, "PostgreSQL: lane owners"): one relay at a time leases a lane's
 * events, straight from the lane's inbox rows into its memory, with no write per event. Ownership is a session
 * advisory lock on a connection of the relay's own, kept alive by a ping each second and ended by PostgreSQL when
 * the relay dies (its socket closes) or freezes (idle_session_timeout); fencing is the lane's epoch in
 * relay_lanes, which every write of an owner checks under the lane lock a takeover takes exclusively.
 */

/** How often an owner's connection is pinged (it must speak at least once per OWNER_IDLE_TIMEOUT_MS). */
const OWNER_PING_MS = 1_000
/** How long an owner's connection may stay silent before PostgreSQL ends it, and its lanes are free to take. */
export const OWNER_IDLE_TIMEOUT_MS = 5_000
/** A lease of a project with buckets reads its pause from relay_lanes at most this often (ms of real time). */
const PAUSE_CHECK_MS = 50
/** A bucket with an unreadable inbox row is tried again this long after (ms of real time), as the deliverer does a lane. */
const UNREADABLE_BUCKET_RETRY_MS = 1_000
/**
 * For this long after PostgreSQL started, a lane claimed before it is taken only by the relay that owned it then
 * (reclaim): every claim ended with the restart, and a takeover would send again what that owner had in flight.
 */
export const RESTART_GRACE_MS = 10_000
/** How often a relay tries again to own a lane another relay owns. */
const OWN_RETRY_MS = 1_000
/** A lane this relay has not leased for this long, with nothing in flight, is let go (another relay may want it). */
const OWNED_IDLE_MS = 60_000
/**
 * Inbox rows read per query (a row holds a commit's events of its lane, up to INBOX_ROW_EVENTS), and the events after
 * which a read takes no further row (a lease reads again while it needs more, up to LEASE_ROUNDS leases' worth).
 */
const INBOX_READ_ROWS = 16
const INBOX_READ_EVENTS = 1_000
/**
 * A lease trusts what this relay knows of its lane (its epoch; relay_events holding none of the lane's rows unless
 * this relay wrote them) for this long after the database last confirmed it, and while its claim's connection
 * answered a ping within CLAIM_FRESH_MS; else it asks first (one round trip). What another process can add meanwhile
 * is a dead letter replayed by an admin command: an old event, which may then go out after newer ones of its user.
 */
const LANE_CHECK_MS = 1_000
const CLAIM_FRESH_MS = 1_500
/** How often an owner that reads no inbox row looks whether rows wait behind a transaction open elsewhere. */
const HELD_BACK_CHECK_MS = 5_000
/** How long a settle naming an inbox job finds the events-table row the event moved to (ms of real time). */
const MOVED_KEPT_MS = 600_000

/**
 * Ends the sessions of this database holding advisory lock ($1, $2) that are stuck writing a result to a client that
 * does not read it (a frozen relay), with a statement older than $3 ms.
 */
const END_STUCK_HOLDERS = `
  SELECT pg_terminate_backend(a.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
  WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = 1
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND a.pid <> pg_backend_pid()
    AND a.state = 'active' AND a.wait_event = 'ClientWrite' AND a.query_start < now() - make_interval(secs => $3::int / 1000.0)`

/**
 * Per advisory lock key in `$1` (a project's interest lock, see PgLaneOwners.interest), how many sessions of this
 * database hold it: the relays that deliver the project. pg_locks is read once (each read takes every partition of
 * the server's lock table), whatever the number of projects.
 */
const RELAYS_OF = `
  WITH held AS MATERIALIZED (
    SELECT classid, objid FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  )
  SELECT k::text AS key, count(h.objid)::int AS relays FROM unnest($1::bigint[]) AS k
  LEFT JOIN held h ON h.classid = ((k >> 32) & 4294967295)::oid AND h.objid = (k & 4294967295)::oid
  GROUP BY k`

/** pg_locks' (classid, objid) of the advisory lock taken with bigint `key`: its high and low 32 bits. */
export function advisoryLockId(key: number): [number, number] {
  const k = BigInt.asUintN(64, BigInt(key))
  return [Number(k >> 32n), Number(k & 0xffffffffn)]
}

/** The lane lock (shared by an owner's writes, settles and recovery, exclusive for a takeover). */
export type LaneLockKey = (lane: string) => number

/** A lane this relay owns: its epoch, the inbox rows read and not yet wholly taken, and who is in flight. */
interface OwnedLane {
  readonly lane: string
  readonly epoch: number
  rows: InboxRow[]
  /** The last inbox row read: (transaction id, row id). */
  cursor: { xid: string; id: number }
  /** Per user: their events in flight from the inbox (a user with one is in flight). */
  readonly users: Map<string, Set<Flying>>
  /** Operations on the lane run one at a time (a lease, a settle of its flying events, a recovery). */
  turn: Promise<void>
  usedAt: number
  /** Whether the lane may have events waiting or in flight in relay_events (true after this owner writes some). */
  open: boolean
  /** When the database last confirmed the epoch and `open` (Date.now()). */
  checkedAt: number
  /** Nothing of the lane is leased before this (the lease's clock): a pause 1Flow asked for, as relay_lanes has it. */
  pausedUntil: number
  /**
   * Held users may have nothing in flight any more (a takeover took the previous owner's leases back, or it had users
   * parked behind events in flight from the inbox): each lease first frees one bounded step of them, until none is left.
   */
  stranded: boolean
  /**
   * A bucket this relay owns beyond its share of the project (more relays came): nothing more is leased from it, and
   * it is let go once nothing of it is in flight here, for a relay with fewer to take.
   */
  yielding: boolean
  /** A bucket whose next inbox row cannot be read is passed over by the project's leases until then (Date.now()). */
  unreadableUntil: number
  /**
   * The claim's connection ended (a PostgreSQL restart, a network cut) while this relay owned the lane: nothing more
   * is leased from it until the claim is taken again with the epoch unchanged (reclaim), which keeps what is in
   * flight here; settles still write, fenced by the epoch (docs/relay-queue.md, "A claim lost and taken back").
   */
  suspended: boolean
  /**
   * A write of the lane's inbox marks failed in a way that may have committed (its connection ended after its COMMIT
   * went out): the marks it meant to leave, for the next write (or the reclaim) to read back whether it did
   * (resolveDoubt). Until then memory may be behind the tables.
   */
  inDoubt: ReadonlyArray<readonly [InboxRow, Uint8Array, number]> | undefined
}

/** What write() returns when the lane's epoch moved on (another relay owns it now): nothing was written. */
const LANE_LOST = Symbol('lane lost')

type Row = Record<string, unknown>

/** An event as relay_events stores it, for the rows an owner writes there (parked, retried, dead, moved). */
export interface TableRow extends EventRowFields {
  readonly job: Job
  readonly state: 'pending' | 'held' | 'leased' | 'dead'
}

/** What the lane owners need of the queue around them. */
export interface OwnerHost {
  readonly pool: pg.Pool
  readonly url: string
  readonly timeoutMs: number
  /** How long an owned lane may go unused before it is let go (OWNED_IDLE_MS unless given). */
  readonly ownedIdleMs?: number
  /** Runs `work` in a transaction that begins with `begin`. */
  tx<T>(work: (c: pg.PoolClient) => Promise<T>, begin: string): Promise<T>
  /** BEGIN holding the lane lock shared (an owner's write). */
  beginOwnerWrite(lane: string): string
  /** BEGIN holding the lane lock exclusively (a takeover). */
  beginTakeover(lane: string): string
  /** The advisory lock key that marks a lane's owner. */
  ownerKey(lane: string): number
  /** The lane lock's key (taken shared by an owner's writes). */
  laneLockKey(lane: string): number
  /** How many buckets each project is spread over (1: the project is the lane). */
  readonly buckets: number
  /** Until when 1Flow asked that nothing of `project` be sent, as relay_lanes has it (0: no pause). */
  projectPausedUntil(project: string): Promise<number>
  /**
   * Whether the lane's epoch is still `epoch` (this relay still owns it), and whether it has events waiting or in
   * flight in relay_events: one round trip.
   */
  laneState(lane: string, epoch: number): Promise<{ mine: boolean; open: boolean; pausedUntil: number }>
  /** Of `users`, those with events waiting or in flight in relay_events. */
  usersWithOpenRows(lane: string, users: readonly string[]): Promise<Set<string>>
  /** Leases from relay_events (inside an owner's transaction); `flying` tells users in flight from the inbox. */
  leaseFromTable(
    c: pg.PoolClient,
    lane: string,
    limit: number,
    leaseMs: number,
    now: number,
    flying: (user: string) => boolean
  ): Promise<Job[]>
  /** Writes events into relay_events (inside the caller's transaction); their ids there, in order. */
  insertRows(c: pg.PoolClient, rows: readonly TableRow[]): Promise<number[]>
  /** Takes back every lease of the lane in relay_events (inside a takeover's transaction); how many. */
  takeBackLane(c: pg.PoolClient, lane: string): Promise<number>
  /**
   * Makes ready one bounded step of the lane's held events whose user has nothing in flight and no retry to wait for
   * (inside an owner's transaction): true when the step was full (more may wait).
   */
  unholdStranded(c: pg.PoolClient, lane: string, now: number): Promise<boolean>
}

/** The lane owners of one PgQueue. */
export class PgLaneOwners {
  private readonly lanes = new Map<string, OwnedLane>()
  private readonly owning = new Map<string, Promise<OwnedLane | undefined>>()
  private readonly ownTriedAt = new Map<string, number>()
  /** Events leased straight from the inbox, by job id. */
  private readonly flying = new Map<number, Flying>()
  /** Inbox job ids whose event moved to relay_events, and its id there. */
  private readonly moved = new Map<number, { readonly id: number; readonly at: number }>()
  private owner: pg.Client | undefined
  /** When the owner's connection last answered (Date.now()). */
  private answeredAt = 0
  private connecting: Promise<pg.Client> | undefined
  private readonly pinger: NodeJS.Timeout
  private closed = false
  /** Lanes taken back with what was in flight after their claim's connection ended (reclaim): for tests. */
  reclaimed = 0
  /** Lanes taken over afresh because a write in doubt had committed (see resolveDoubt): for tests. */
  takenAfresh = 0
  /** Leases of relay_events that takeovers took back, not yet counted (takeTakenBack). */
  private takenBack = 0
  /** Per lane: why its unread inbox rows wait (a write transaction open elsewhere), and when that was last looked at. */
  private readonly heldBack = new Map<string, { waiting: boolean; reason: string | undefined; at: number }>()
  /**
   * Per lane: its relay_events rows this relay holds leased, and when each lease ends (the lease's clock). A bucket is
   * let go only once it has none (the next owner would take them back and send them again).
   */
  private readonly tableLeased = new Map<string, Map<number, number>>()
  /**
   * Per project with buckets this relay delivers: the relays that deliver it, this one included, as last counted. Each
   * such relay holds the project's interest lock (shared, on its claims connection, so it ends with the relay).
   */
  private readonly interest = new Map<string, number>()
  /** Per project: its pause as last read from relay_lanes, and when (Date.now()). */
  private readonly pauseSeen = new Map<string, { until: number; at: number }>()
  /** Per project: the bucket its next lease looks at first (leases go round the buckets this relay owns). */
  private readonly nextBucket = new Map<string, number>()

  constructor(private readonly host: OwnerHost) {
    this.pinger = setInterval(() => void this.ping(), OWNER_PING_MS).unref()
  }

  /** Why some lane's inbox rows wait behind a transaction outside the relays, or undefined. */
  deliveryHeldBack(): string | undefined {
    for (const [lane, { reason }] of this.heldBack) if (reason && this.lanes.has(lane)) return reason
    return undefined
  }

  /** Events in flight from the inbox, per lane. */
  flyingPerLane(): Map<string, number> {
    const out = new Map<string, number>()
    for (const f of this.flying.values()) out.set(f.job.projectId, (out.get(f.job.projectId) ?? 0) + 1)
    return out
  }

  private async ownerClient(): Promise<pg.Client> {
    if (this.owner) return this.owner
    this.connecting ??= (async () => {
      const c = new pg.Client({
        connectionString: this.host.url,
        connectionTimeoutMillis: this.host.timeoutMs,
        query_timeout: this.host.timeoutMs + 1000,
        statement_timeout: this.host.timeoutMs,
        keepAlive: true,
        // Who owns what, for an operator (docs/deploy.md): the lanes' locks in pg_locks, this name in pg_stat_activity.
        application_name: `oneflow-relay owner ${process.pid}`
      })
      c.on('error', () => this.lost(c))
      c.on('end', () => this.lost(c))
      await c.connect()
      try {
        // PostgreSQL ends this session once it stays silent this long (a frozen relay): its locks go with it.
        await c.query(`SET idle_session_timeout = ${OWNER_IDLE_TIMEOUT_MS}`)
      } catch (error) {
        await c.end().catch(() => undefined)
        throw error
      }
      this.owner = c
      await this.reclaim(c)
      return c
    })().finally(() => (this.connecting = undefined))
    return this.connecting
  }

  /**
   * Takes back, on the new claims connection `c`, the lanes whose claim ended with the previous one (`suspended`). A
   * lane whose epoch did not move meanwhile was owned by nobody else: its claim is taken again and what is in flight
   * here stays this relay's, so nothing of it is sent twice. One whose epoch moved is forgotten, as any lane another
   * relay took over; one whose claim another relay holds, the epoch unchanged, is tried again at the next ping. One
   * whose memory cannot be trusted (a write in doubt did commit, or the server lost commits: see resolveDoubt and
   * sameHistory) is taken over afresh by this relay, which holds its claim: its events in flight are sent again.
   */
  private reclaim(c: pg.Client): Promise<void> {
    // One at a time: a claim taken twice on one session would need two unlocks to be let go.
    const run = this.reclaiming.then(() => this.reclaimOnce(c))
    this.reclaiming = run
    return run
  }

  private reclaiming: Promise<void> = Promise.resolve()

  private async reclaimOnce(c: pg.Client): Promise<void> {
    let lanes = [...this.lanes.values()].filter((st) => st.suspended)
    if (lanes.length === 0 || this.owner !== c) return
    const epochsOf = async (of: readonly OwnedLane[]) => {
      const { rows } = await this.onClaims(
        c,
        'SELECT project_id, epoch FROM relay_lanes WHERE project_id = ANY($1::text[])',
        [of.map((st) => st.lane)]
      )
      return new Map((rows as Row[]).map((r) => [String(r.project_id), Number(r.epoch)]))
    }
    try {
      // A lane another relay took over meanwhile is forgotten without trying its claim: its owner, which remembers
      // it, may be taking it back too.
      const before = await epochsOf(lanes)
      for (const st of lanes) if (before.get(st.lane) !== st.epoch) this.forget(st)
      lanes = lanes.filter((st) => this.lanes.get(st.lane) === st)
      if (lanes.length === 0 || this.owner !== c) return
      const keys = lanes.map((st) => this.host.ownerKey(st.lane))
      const { rows: locked } = await this.onClaims(
        c,
        'SELECT k.i, pg_try_advisory_lock(k.key) AS ok FROM unnest($1::bigint[]) WITH ORDINALITY AS k(key, i)',
        [keys]
      ).catch((error: unknown) => {
        // Its answer lost, some claims may be held unknown to this relay (taken twice by the next try, a single
        // unlock would leave them held): the connection is ended, and every claim with it.
        this.lost(c)
        throw error
      })
      const ok = new Set((locked as Row[]).filter((r) => r.ok).map((r) => Number(r.i) - 1))
      const unlock = (taken: readonly number[]) =>
        this.onClaims(c, 'SELECT pg_advisory_unlock(k) FROM unnest($1::bigint[]) AS k', [taken]).catch(() => undefined)
      // Read again once the claims are held (a statement of its own: its snapshot is newer than any takeover before).
      const epochOf = await epochsOf(lanes).catch(async (error: unknown) => {
        // The claims are let go again: the next try takes each once more, and one taken twice would stay held.
        await unlock([...ok].map((i) => keys[i] as number))
        throw error
      })
      for (const [i, st] of lanes.entries()) {
        if (this.owner !== c) return
        const key = keys[i] as number
        const ours = epochOf.get(st.lane) === st.epoch
        if (this.lanes.get(st.lane) !== st || !ours) {
          // Forgotten meanwhile (a write found its epoch moved), or taken over: the claim just taken is let go.
          if (ok.has(i)) await unlock([key])
          this.forget(st)
          continue
        }
        // Another relay holds the claim and has not taken the lane over (yet): tried again at the next ping, and
        // forgotten once its epoch moves.
        if (!ok.has(i)) continue
        const trusted = await this.inTurn(st, async () => (await this.resolveDoubt(st)) && this.sameHistory(st)).catch(
          () => undefined
        )
        if (trusted === undefined) {
          // Not read (the database failed again): tried again at the next ping, from the claim on.
          await unlock([key])
          continue
        }
        if (trusted) {
          st.suspended = false
          st.checkedAt = 0
          this.reclaimed++
          continue
        }
        // Claimed here, but a write in doubt did commit and memory is behind the tables: a takeover of its own.
        this.forget(st)
        this.takenAfresh++
        // (As a take: a lease asking for the lane meanwhile waits for it, rather than take the claim a second time.)
        const attempt = this.takeOver(c, st.lane, key)
          .catch(() => undefined)
          .finally(() => this.owning.delete(st.lane))
        this.owning.set(st.lane, attempt)
        await attempt
      }
    } catch {
      // The connection failed again: the lanes stay suspended, and the next connection tries again.
    }
  }

  /** The last query sent on the claims' connection: its queries go one after another (pg queues, but not for long). */
  private claimsQueue: Promise<unknown> = Promise.resolve()

  /** A query on the claims' connection `c`, after the ones sent before it. */
  private onClaims(c: pg.Client, text: string, values: unknown[] = []): Promise<pg.QueryResult> {
    const run = this.claimsQueue.then(
      () => c.query(text, values),
      () => c.query(text, values)
    )
    this.claimsQueue = run.catch(() => undefined)
    return run
  }

  /**
   * The owner's connection is gone, and with it every lane's claim: nothing more is leased from them until the next
   * connection takes them back (reclaim), which keeps what is in flight here when nobody else took a lane meanwhile.
   */
  private lost(c: pg.Client): void {
    if (this.owner !== c) return
    this.owner = undefined
    // Its interest locks went with it: taken again on the next connection.
    this.interest.clear()
    for (const st of this.lanes.values()) st.suspended = true
    void c.end().catch(() => undefined)
  }

  /** Whether this relay owns `st`, with its claim held: what a lease needs (a settle needs only the epoch). */
  private holds(st: OwnedLane): boolean {
    return this.lanes.get(st.lane) === st && !st.suspended
  }

  /**
   * Forgets a lane: its events in flight here are no longer this relay's (their settles change nothing). Its claim
   * is let go too (`unlock`), unless the connection holding it is gone anyway (a suspended lane's).
   */
  private forget(st: OwnedLane, unlock = true): void {
    if (this.lanes.get(st.lane) !== st) return
    this.lanes.delete(st.lane)
    for (const set of st.users.values()) for (const f of set) this.flying.delete(f.job.id)
    st.users.clear()
    this.tableLeased.delete(st.lane)
    if (unlock && !st.suspended && this.owner)
      void this.onClaims(this.owner, 'SELECT pg_advisory_unlock($1)', [this.host.ownerKey(st.lane)]).catch(
        () => undefined
      )
  }

  /**
   * Keeps the claims' connection talking (also while it owns nothing: a relay waiting for a lane tries it once a
   * second on this connection), and lets go of lanes idle for long.
   */
  private async ping(): Promise<void> {
    const c = this.owner
    if (!c) {
      // Lanes whose claim ended with the last connection are taken back on a new one as soon as PostgreSQL answers.
      if (!this.closed && [...this.lanes.values()].some((st) => st.suspended))
        await this.ownerClient().catch(() => undefined)
      return
    }
    try {
      // (A reclaim that failed on a connection that lived on, a statement timeout, is tried again here; not waited
      // for: it may wait on a lane's writes, and the claims connection must go on talking meanwhile.)
      if ([...this.lanes.values()].some((st) => st.suspended)) void this.reclaim(c)
      await this.countRelays(c)
      this.answeredAt = Date.now()
      const idleSince = Date.now() - (this.host.ownedIdleMs ?? OWNED_IDLE_MS)
      for (const st of [...this.lanes.values()]) {
        if (st.usedAt < idleSince && st.users.size === 0 && !st.suspended) this.forget(st)
      }
      this.rebalance()
    } catch {
      this.lost(c)
    }
  }

  /** The buckets of `project` one relay owns at most: an even share among the relays that deliver it. */
  private share(project: string): number {
    return Math.ceil(this.host.buckets / Math.max(1, this.interest.get(project) ?? 1))
  }

  /** The key of `project`'s interest lock, and its (classid, objid) as pg_locks shows them. */
  private interestKey(project: string): number {
    return this.host.ownerKey(`interest:${project}`)
  }

  /**
   * Counts, for each project this relay delivers, the relays that deliver it (on the claims connection `c`, with the
   * ping): relays with other projects in their config do not count toward this one's share.
   */
  private async countRelays(c: pg.Client): Promise<void> {
    const projects = [...this.interest.keys()]
    if (projects.length === 0) {
      await this.onClaims(c, 'SELECT 1')
      return
    }
    const keys = projects.map((p) => BigInt.asIntN(64, BigInt(this.interestKey(p))).toString())
    const { rows } = await this.onClaims(c, RELAYS_OF, [keys])
    const byKey = new Map((rows as Row[]).map((r) => [String(r.key), Number(r.relays)]))
    projects.forEach((p, i) => {
      if (this.interest.has(p)) this.interest.set(p, Math.max(1, byKey.get(keys[i] as string) ?? 1))
    })
  }

  /** This relay delivers `project` (with buckets): its interest lock taken (once per claims connection), relays counted. */
  private async interested(project: string): Promise<void> {
    if (this.interest.has(project)) return
    const c = await this.ownerClient()
    // A shared lock: any number of relays hold it at once, and nobody takes it exclusively.
    await this.onClaims(c, 'SELECT pg_try_advisory_lock_shared($1)', [this.interestKey(project)])
    if (this.owner !== c) return
    this.interest.set(project, 1)
    await this.countRelays(c)
  }

  /**
   * Each project's buckets beyond this relay's share (the ones it took last) yield: nothing more is leased from them,
   * and each is let go once none of its events is in flight here. A relay that came or went changes the share.
   */
  private rebalance(): void {
    if (this.host.buckets <= 1) return
    const byProject = new Map<string, OwnedLane[]>()
    for (const st of this.lanes.values()) {
      const project = projectOf(st.lane)
      let owned = byProject.get(project)
      if (!owned) byProject.set(project, (owned = []))
      owned.push(st)
    }
    for (const [project, owned] of byProject) {
      const share = this.share(project)
      owned.forEach((st, i) => (st.yielding = i >= share))
      for (const st of owned) if (st.yielding && st.users.size === 0 && !this.hasTableLeases(st.lane)) this.forget(st)
    }
  }

  /** Whether this relay holds leases of the lane's relay_events rows that have not ended by the last lease's clock. */
  private hasTableLeases(lane: string): boolean {
    const leased = this.tableLeased.get(lane)
    if (!leased) return false
    for (const [id, until] of leased) if (until <= this.leaseNow) leased.delete(id)
    if (leased.size === 0) this.tableLeased.delete(lane)
    return leased.size > 0
  }

  /** The latest time a lease was asked for (the leases' clock). */
  private leaseNow = 0

  /** This relay leased relay_events rows `ids` of `lane` until `until`. */
  private noteTableLeases(lane: string, ids: Iterable<number>, until: number): void {
    let leased = this.tableLeased.get(lane)
    for (const id of ids) {
      if (!leased) this.tableLeased.set(lane, (leased = new Map()))
      leased.set(id, until)
    }
  }

  /**
   * Leases of relay_events rows that a settle named (done with, whatever it changed), or a renewal extended
   * (`until`) or found no longer held (`until` undefined).
   */
  tableLeasesEnded(lane: string, ids: readonly number[], until?: number): void {
    const leased = this.tableLeased.get(lane)
    if (!leased) return
    for (const id of ids) {
      if (until === undefined) leased.delete(id)
      else if (leased.has(id)) leased.set(id, Math.max(leased.get(id) as number, until))
    }
    if (leased.size === 0) this.tableLeased.delete(lane)
  }

  /** This relay's claim on a lane: taken if nobody holds it (tried at most once a second), or undefined. */
  private own(lane: string): Promise<OwnedLane | undefined> {
    const held = this.lanes.get(lane)
    if (held) return Promise.resolve(held)
    const pending = this.owning.get(lane)
    if (pending) return pending
    const t = Date.now()
    if (t - (this.ownTriedAt.get(lane) ?? -Infinity) < OWN_RETRY_MS) return Promise.resolve(undefined)
    this.ownTriedAt.set(lane, t)
    const attempt = this.take(lane).finally(() => this.owning.delete(lane))
    this.owning.set(lane, attempt)
    return attempt
  }

  private async take(lane: string): Promise<OwnedLane | undefined> {
    const c = await this.ownerClient()
    if (this.closed) {
      await c.end().catch(() => undefined)
      return undefined
    }
    const key = this.host.ownerKey(lane)
    // Just after PostgreSQL started, a lane claimed before it is left to its owner of then (RESTART_GRACE_MS), which
    // takes it back with what it has in flight (reclaim): taken over here, that would be sent again. Started: the
    // server, or its processes again after one crashed (the postmaster stays up then, and restarts the checkpointer
    // with the rest; a role without pg_read_all_stats may not see when, and gets no grace for that case).
    const { rows } = await this.onClaims(
      c,
      `WITH s AS (SELECT greatest(pg_postmaster_start_time(),
                    (SELECT backend_start FROM pg_stat_activity WHERE backend_type = 'checkpointer')) AS started)
       SELECT CASE WHEN now() < s.started + make_interval(secs => $3::int / 1000.0)
                    AND EXISTS (SELECT 1 FROM relay_lanes WHERE project_id = $2
                                AND coalesce(claimed_at, '-infinity') < s.started)
              THEN false ELSE pg_try_advisory_lock($1) END AS ok FROM s`,
      [key, lane, RESTART_GRACE_MS]
    ).catch((error: unknown) => {
      // Its answer lost, the claim may be held unknown to this relay: the connection is ended, and its claims with it.
      this.lost(c)
      throw error
    })
    this.answeredAt = Date.now()
    if (!(rows[0] as Row).ok) return undefined
    return this.takeOver(c, lane, key)
  }

  /** Takes a lane over, its claim (`key`) held on `c`: a new epoch, and the previous owner's leases taken back. */
  private async takeOver(c: pg.Client, lane: string, key: number): Promise<OwnedLane | undefined> {
    // A previous owner frozen while PostgreSQL was sending it a large result (a lease's events) holds the lane lock
    // for as long as it stays frozen: PostgreSQL cannot cancel a statement while it writes to the client, so neither
    // the statement timeout nor the idle timeouts end it. Such a session (waiting to write, its statement older than
    // any statement timeout of a relay lets it be) is ended first; without the right to, the takeover waits as before.
    await this.host.pool
      .query(END_STUCK_HOLDERS, [...advisoryLockId(this.host.laneLockKey(lane)), this.host.timeoutMs])
      .catch(() => undefined)
    let epoch: number
    let pausedUntil = 0
    let takenBack = 0
    try {
      // The lane lock exclusively: a previous owner's writes in progress finish first, and any after see the new
      // epoch and write nothing. Its leases in relay_events are taken back (it can no longer settle them): at most
      // what it had in flight. The users it left held are freed after, by this owner's leases (`stranded`): however
      // large the backlog parked behind them, the takeover is one short transaction (docs/relay-queue.md).
      epoch = await this.host.tx(async (tx) => {
        // (A pause is the project's: on its own row, which is the lane's without buckets.)
        const { rows: e } = await tx.query(
          `INSERT INTO relay_lanes AS l (project_id, epoch, claimed_at) VALUES ($1, 1, now())
           ON CONFLICT (project_id) DO UPDATE SET epoch = l.epoch + 1, claimed_at = now()
           RETURNING epoch, (SELECT paused_until FROM relay_lanes WHERE project_id = $2) AS paused_until`,
          [lane, projectOf(lane)]
        )
        takenBack = await this.host.takeBackLane(tx, lane)
        pausedUntil = Number((e[0] as Row).paused_until ?? 0)
        return Number((e[0] as Row).epoch)
      }, this.host.beginTakeover(lane))
    } catch (error) {
      await this.onClaims(c, 'SELECT pg_advisory_unlock($1)', [key]).catch(() => undefined)
      throw error
    }
    this.takenBack += takenBack
    if (this.owner !== c) return undefined
    const st: OwnedLane = {
      lane,
      epoch,
      rows: [],
      cursor: { xid: '0', id: 0 },
      users: new Map(),
      turn: Promise.resolve(),
      usedAt: Date.now(),
      open: true,
      checkedAt: 0,
      pausedUntil,
      stranded: true,
      yielding: false,
      unreadableUntil: 0,
      suspended: false,
      inDoubt: undefined
    }
    this.lanes.set(lane, st)
    return st
  }

  /**
   * Runs `fn` (a settle of relay_events rows of `lane`) in the lane's turn while this relay owns the lane: a lease
   * that found a user in relay_events and parks the user's inbox events behind it must not interleave with the
   * settle that frees that user (its unhold would miss the rows parked a moment later).
   */
  inLaneTurn<T>(lane: string, fn: () => Promise<T>): Promise<T> {
    const st = this.lanes.get(lane)
    return st ? this.inTurn(st, fn) : fn()
  }

  /**
   * Runs `work` as an owner's write of `lane` (in the lane's turn, its epoch checked) when this relay owns the lane.
   * Undefined, with nothing done, when it does not: a lane another relay owns is that relay's to recover (a recovery
   * here would only wait on its lane lock and hold up its writes), and one nobody owns is recovered by the takeover
   * of the next relay that leases it (docs/relay-queue.md, "Recovery is the owner's").
   */
  async asOwner<T>(lane: string, work: (c: pg.PoolClient) => Promise<T>): Promise<T | undefined> {
    const st = this.lanes.get(lane)
    if (!st) return undefined
    return this.inTurn(st, async () => (this.lanes.get(lane) === st ? this.write(st, work) : undefined))
  }

  /**
   * Frees the held users of `lane` with nothing in flight, a bounded step per owner write (the lane's leases may run
   * between them), if this relay owns the lane; else nothing (see asOwner).
   */
  async unstrand(lane: string, now: number): Promise<void> {
    const st = this.lanes.get(lane)
    for (;;) {
      const more = await this.asOwner(lane, (c) => this.host.unholdStranded(c, lane, now))
      if (!more) break
    }
    // (Not a claim taken again meanwhile: that one has its own stranded users to free.)
    if (st && this.lanes.get(lane) === st) st.stranded = false
  }

  /** A pause of `lane` until `until` (see PgQueue.pauseLane), known here at once if this relay owns the lane. */
  notePause(project: string, until: number): void {
    for (const st of this.lanes.values())
      if (projectOf(st.lane) === project) st.pausedUntil = Math.max(st.pausedUntil, until)
  }

  /** A lane's events are being worked on (renewed): it is in use, not to be let go as idle. */
  touch(lanes: Iterable<string>): void {
    const t = Date.now()
    for (const lane of lanes) {
      const st = this.lanes.get(lane)
      if (st) st.usedAt = t
    }
  }

  /** Runs `fn` on the lane when no other operation of it runs. */
  private async inTurn<T>(st: OwnedLane, fn: () => Promise<T>): Promise<T> {
    const before = st.turn
    let done!: () => void
    st.turn = new Promise<void>((r) => (done = r))
    await before
    try {
      return await fn()
    } finally {
      done()
    }
  }

  /**
   * An owner's write: in a transaction holding the lane lock shared, after checking the lane's epoch is still
   * this owner's. Undefined (nothing written, the lane forgotten) when it is not.
   */
  private async write<T>(
    st: OwnedLane,
    work: (c: pg.PoolClient) => Promise<T>,
    marks?: ReadonlyArray<readonly [InboxRow, Uint8Array, number]>
  ): Promise<T | undefined> {
    if (!(await this.resolveDoubt(st))) {
      this.forget(st)
      return undefined
    }
    const result = await this.host
      .tx(async (c): Promise<T | typeof LANE_LOST> => {
        const { rows } = await c.query('SELECT 1 FROM relay_lanes WHERE project_id = $1 AND epoch = $2', [
          st.lane,
          st.epoch
        ])
        // Nothing written yet: the transaction commits empty.
        return rows.length === 0 ? LANE_LOST : work(c)
      }, this.host.beginOwnerWrite(st.lane))
      .catch((error: unknown) => {
        // (Failed before its COMMIT went out, the transaction rolled back.)
        if (marks && (error as { [COMMIT_SENT]?: boolean })?.[COMMIT_SENT] && mayHaveCommitted(error))
          st.inDoubt = marks
        throw error
      })
    if (result !== LANE_LOST) return result
    this.forget(st)
    return undefined
  }

  /**
   * An owner's write of events leaving the inbox for relay_events (`rows`, with their `marks` as done): their ids
   * there, and what to change in memory once it committed. Undefined when the lane is no longer this owner's.
   */
  private writeMoving(
    st: OwnedLane,
    rows: readonly TableRow[],
    marks: ReadonlyMap<InboxRow, readonly number[]>
  ): Promise<{ ids: number[]; apply: () => void } | undefined> {
    const { after, apply } = nextMarks(marks)
    return this.write(
      st,
      async (c) => {
        const ids = await this.host.insertRows(c, rows)
        await saveMarks(c, after)
        return { ids, apply }
      },
      after
    )
  }

  /**
   * Whether the lane's inbox is still what this relay read (taking it back after its claim's connection ended): every
   * row it holds in memory is there, written by the same transaction, and transaction ids went on from its cursor. A
   * server that lost its last commits (`synchronous_commit = off`, a failover to a standby behind) hands out ids
   * again: a cursor kept would skip the rows written under ids reused, and marks written by row id would land on them.
   */
  private async sameHistory(st: OwnedLane): Promise<boolean> {
    const held = new Map<number, string | undefined>()
    for (const row of st.rows) held.set(row.id, row.xid)
    for (const set of st.users.values()) for (const f of set) held.set(f.row.id, f.row.xid)
    const { rows } = await this.host.pool.query(
      `SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax,
              (SELECT coalesce(json_object_agg(id, xid::text), '{}') FROM relay_inbox WHERE id = ANY($1::bigint[])) AS rows`,
      [[...held.keys()]]
    )
    const r = rows[0] as Row
    if (st.cursor.xid !== '0' && BigInt(String(r.xmax)) <= BigInt(st.cursor.xid)) return false
    const now = r.rows as Record<string, string>
    return [...held].every(([id, xid]) => xid !== undefined && now[String(id)] === xid)
  }

  /**
   * Whether this relay's memory of the lane can be trusted: true unless a write of its marks is in doubt and read
   * back as committed (or as neither before nor after it). Each row that write changed has its count of events left
   * as memory has it (the write did not commit: the doubt is cleared) or as the write left it (deleted at 0).
   * Only the owner writes a lane's marks, so nothing else can have changed them meanwhile.
   */
  private async resolveDoubt(st: OwnedLane): Promise<boolean> {
    if (!st.inDoubt) return true
    const marks = st.inDoubt
    if (!marks) return true
    // Holding the lane lock exclusively: a write cut off from this relay may still be committing on the server (a
    // network cut, a slow disk), holding the lock shared until it ends. Read before then, it would look uncommitted.
    const rows = await this.host.tx(
      async (c) =>
        (
          await c.query('SELECT id, left_events FROM relay_inbox WHERE id = ANY($1::bigint[])', [
            marks.map(([row]) => row.id)
          ])
        ).rows,
      this.host.beginTakeover(st.lane)
    )
    const left = new Map((rows as Row[]).map((r) => [Number(r.id), Number(r.left_events)]))
    const untouched = marks.every(([row, , after]) => after !== row.left && left.get(row.id) === row.left)
    if (untouched) st.inDoubt = undefined
    return untouched
  }

  /**
   * An owner's write of `done` marks alone (what a delivered lease settles): the lane lock, the epoch check and the
   * marks in one round trip (one simple query: its statements are one transaction, and none is written unless the
   * epoch is still this owner's). Undefined when it is not (the lane forgotten).
   */
  private async marksOnly(
    st: OwnedLane,
    marks: ReadonlyMap<InboxRow, readonly number[]>
  ): Promise<{ ids: number[]; apply: () => void } | undefined> {
    const [result] = await this.marksOnlyOf([{ st, marks }])
    return result
  }

  /**
   * marksOnly for several lanes (a project's buckets) in one round trip: each lane's lock shared (in key order), and
   * each lane's marks written only if its epoch is still this owner's. Per lane, in order, what marksOnly returns.
   */
  private async marksOnlyOf(
    work: ReadonlyArray<{ st: OwnedLane; marks: ReadonlyMap<InboxRow, readonly number[]> }>
  ): Promise<Array<{ ids: number[]; apply: () => void } | undefined>> {
    // A lane whose write in doubt had committed is forgotten: nothing of it is written (undefined).
    for (const { st } of work) if (!(await this.resolveDoubt(st))) this.forget(st)
    const live = work.filter(({ st }) => this.lanes.get(st.lane) === st)
    const written = live.length > 0 ? await this.writeMarksOf(live) : []
    return work.map((w) => (live.includes(w) ? written[live.indexOf(w)] : undefined))
  }

  /** marksOnlyOf's round trip, for lanes with no write in doubt. */
  private async writeMarksOf(
    work: ReadonlyArray<{ st: OwnedLane; marks: ReadonlyMap<InboxRow, readonly number[]> }>
  ): Promise<Array<{ ids: number[]; apply: () => void } | undefined>> {
    const next = work.map(({ st, marks }) => ({ st, ...nextMarks(marks) }))
    const rows = next.flatMap(({ st, after }) => after.map((a) => ({ st, a })))
    if (rows.length === 0) return next.map(({ apply }) => ({ ids: [], apply }))
    const lanes = next.map(({ st }) => st)
    const list = (values: Array<string | number>, type: string) => `ARRAY[${values.join(',')}]::${type}[]`
    const locks = [...new Set(lanes.map((st) => this.host.laneLockKey(st.lane)))].sort((a, b) => a - b)
    // Every value below is a number, hex, or a lane name escaped as a literal: nothing a client sent.
    const results = (await this.host.pool
      .query(
        `SELECT ${locks.map((k) => `pg_advisory_xact_lock_shared(${k})`).join(', ')};
       WITH marks AS (
         SELECT m.* FROM unnest(${list(
           rows.map(({ a: [row] }) => row.id),
           'bigint'
         )}, ${list(
           rows.map(({ a: [, done] }) => `decode('${Buffer.from(done).toString('hex')}', 'hex')`),
           'bytea'
         )}, ${list(
           rows.map(({ a: [, , left] }) => left),
           'int'
         )}, ${list(
           rows.map(({ st }) => pg.escapeLiteral(st.lane)),
           'text'
         )}, ${list(
           rows.map(({ st }) => st.epoch),
           'bigint'
         )}) AS m(id, done, left_events, lane, epoch)
         WHERE EXISTS (SELECT 1 FROM relay_lanes l WHERE l.project_id = m.lane AND l.epoch = m.epoch)
       ), gone AS (DELETE FROM relay_inbox i USING marks m WHERE i.id = m.id AND m.left_events <= 0)
       UPDATE relay_inbox i SET done = m.done, left_events = m.left_events FROM marks m WHERE i.id = m.id AND m.left_events > 0;
       SELECT l.project_id AS lane FROM relay_lanes l JOIN unnest(${list(
         lanes.map((st) => pg.escapeLiteral(st.lane)),
         'text'
       )}, ${list(
         lanes.map((st) => st.epoch),
         'bigint'
       )}) AS o(lane, epoch) ON l.project_id = o.lane AND l.epoch = o.epoch`
      )
      .catch((error: unknown) => {
        // One simple query is one transaction, sent whole: any answer lost may hide its commit.
        if (mayHaveCommitted(error)) for (const { st, after } of next) if (after.length > 0) st.inDoubt = after
        throw error
      })) as unknown as pg.QueryResult[]
    const mine = new Set((results[2]?.rows ?? []).map((r) => String((r as Row).lane)))
    return next.map(({ st, apply }) => {
      if (mine.has(st.lane)) return { ids: [], apply }
      this.forget(st)
      return undefined
    })
  }

  /**
   * Leases a lane's events if this relay owns it (else none): those waiting in relay_events first (retries, users
   * parked behind them, leases taken back: older than anything in the inbox), then straight from the inbox.
   */
  lease(lane: string, limit: number, leaseMs: number, now: number): Promise<Job[]> {
    this.leaseNow = Math.max(this.leaseNow, now)
    // A lane already owned takes its turn at once (before any settle called after this lease).
    const held = this.lanes.get(lane)
    if (held) return this.leaseOwned(held, limit, leaseMs, now)
    return this.own(lane).then((st) => (st ? this.leaseOwned(st, limit, leaseMs, now) : []))
  }

  /**
   * Leases events of a project spread over buckets (`lanes`, one per bucket), up to `limit` from the buckets this
   * relay owns, starting each time after the last one that gave some (so that each bucket has its turn). A bucket
   * nobody owns is taken while this relay owns fewer than its share (the buckets over the relays counted; see
   * rebalance), so that several relays drain one project. Each bucket's events are a lease of their own (their own
   * token), in id order.
   */
  async leaseProject(
    project: string,
    lanes: readonly string[],
    limit: number,
    leaseMs: number,
    now: number
  ): Promise<Job[]> {
    this.leaseNow = Math.max(this.leaseNow, now)
    await this.interested(project)
    // A pause another bucket's owner heard holds here within PAUSE_CHECK_MS.
    const seen = this.pauseSeen.get(project)
    const t = Date.now()
    const pausedUntil = seen && t - seen.at < PAUSE_CHECK_MS ? seen.until : await this.host.projectPausedUntil(project)
    if (!seen || t - seen.at >= PAUSE_CHECK_MS) this.pauseSeen.set(project, { until: pausedUntil, at: t })
    if (now < pausedUntil) {
      this.notePause(project, pausedUntil)
      return []
    }
    const n = lanes.length
    // A first look at a random bucket: relays starting together do not all try the same ones first.
    const start = this.nextBucket.get(project) ?? Math.floor(Math.random() * n)
    const out: Job[] = []
    const from = new Set<OwnedLane>()
    let unreadable: InboxRowError | undefined
    for (let i = 0; i < n && out.length < limit; i++) {
      const at = (start + i) % n
      const lane = lanes[at] as string
      let st = this.lanes.get(lane)
      // One lease of a bucket in flight at a time: a second one would meet its users again (a bucket has a fraction
      // of the project's) and park their events in relay_events, a write per event (docs/relay-queue.md, "Buckets").
      // (A bucket whose claim ended with its connection waits to be taken back: see reclaim.)
      if (
        st &&
        (st.suspended ||
          st.yielding ||
          st.users.size > 0 ||
          this.hasTableLeases(lane) ||
          st.unreadableUntil > Date.now())
      )
        continue
      let jobs: Job[]
      try {
        if (!st) {
          if (this.ownedOf(project) >= this.share(project)) continue
          st = await this.own(lane)
          if (!st) continue
        }
        jobs = await this.leaseOwned(st, limit - out.length, leaseMs, now)
      } catch (error) {
        // A damaged row stops its bucket, not the project's others (they have other users). What this call leased
        // already goes out: a failing database shows again on the next lease.
        if (error instanceof InboxRowError && st) {
          st.unreadableUntil = Date.now() + UNREADABLE_BUCKET_RETRY_MS
          unreadable ??= error
          continue
        }
        if (out.length > 0) break
        throw error
      }
      if (jobs.length > 0) {
        this.nextBucket.set(project, (at + 1) % n)
        out.push(...jobs)
        from.add(st)
      }
    }
    // A bucket given up meanwhile (its claim's connection ended during a later bucket's lease): its events are no
    // longer this relay's to send (their next owner sends them).
    const kept = new Set([...from].filter((st) => this.holds(st)).map((st) => st.lane))
    const leased = kept.size === from.size ? out : out.filter((j) => kept.has(j.projectId))
    // Said when nothing else went out (the deliverer logs it once, and pauses the project's leases for a second).
    if (unreadable && leased.length === 0) throw unreadable
    return leased.sort((a, b) => a.id - b.id)
  }

  /** How many of the project's buckets this relay owns and leases from (not yielding). */
  private ownedOf(project: string): number {
    let n = 0
    for (const st of this.lanes.values()) if (!st.yielding && projectOf(st.lane) === project) n++
    return n
  }

  private leaseOwned(st: OwnedLane, limit: number, leaseMs: number, now: number): Promise<Job[]> {
    const lane = st.lane
    return this.inTurn(st, async () => {
      if (!this.holds(st)) return []
      const t = Date.now()
      st.usedAt = t
      if (st.open || t - st.checkedAt >= LANE_CHECK_MS || t - this.answeredAt >= CLAIM_FRESH_MS) {
        const { mine, open, pausedUntil } = await this.host.laneState(lane, st.epoch)
        if (!mine) {
          this.forget(st)
          return []
        }
        if (!this.holds(st)) return []
        st.open = open
        st.checkedAt = t
        st.pausedUntil = Math.max(st.pausedUntil, pausedUntil)
      }
      if (st.stranded) {
        // One step; a step that fails (a slow statement) is tried again by the next lease, and the periodic recovery.
        const more = await this.write(st, (c) => this.host.unholdStranded(c, lane, now)).catch(() => true)
        if (more === undefined || !this.holds(st)) return []
        if (!more) st.stranded = false
        st.open = true
      }
      // 1Flow asked for a pause (this relay heard it, or the one before it): nothing is leased until it ends.
      if (now < st.pausedUntil) return []
      const open = st.open
      if (open) {
        const jobs = await this.write(st, (c) =>
          this.host.leaseFromTable(c, lane, limit, leaseMs, now, (user) => st.users.has(user))
        )
        // The claim lost meanwhile (its connection ended): its leases in relay_events are the next owner's to take back.
        if (jobs === undefined || !this.holds(st)) return []
        if (jobs.length > 0) {
          this.noteTableLeases(
            lane,
            jobs.map((j) => j.id),
            now + leaseMs
          )
          return jobs
        }
      }
      return this.leaseFromInbox(st, limit, leaseMs, now, open)
    })
  }

  /**
   * Reads a lane's next inbox rows: those after the cursor whose transaction ended before every transaction still
   * running began (below the snapshot's xmin). A transaction's rows are all visible once it ended, and none can
   * commit later below that bound, so no row is ever skipped (docs/relay-queue.md). False when there are none.
   */
  private async readInbox(st: OwnedLane, stopAtBad: boolean): Promise<boolean> {
    const { rows } = await this.host.pool.query({
      // (The transaction id is read as text under another name: ORDER BY xid would otherwise sort that text.)
      // Up to INBOX_READ_ROWS rows, fewer once they hold INBOX_READ_EVENTS (a row holds up to 500): the rows' bodies
      // are read only for those returned.
      text: `SELECT i.id, i.xid::text AS xid_text, i.body, i.done FROM (
               SELECT id, xid, sum(events) OVER (ORDER BY xid, id) - events AS before FROM (
                 SELECT id, xid, events FROM relay_inbox
                 WHERE project_id = $1 AND (xid, id) > ($2::xid8, $3::bigint) AND xid < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY xid, id LIMIT ${INBOX_READ_ROWS}
               ) r
             ) w JOIN relay_inbox i ON i.id = w.id
             WHERE w.before < ${INBOX_READ_EVENTS} ORDER BY w.xid, w.id`,
      values: [st.lane, st.cursor.xid, st.cursor.id]
    })
    if (rows.length === 0) {
      await this.lookWhyHeldBack(st)
      return false
    }
    this.heldBack.delete(st.lane)
    let read = 0
    for (const r of rows as Row[]) {
      const id = Number(r.id)
      let events: InboxEvent[]
      try {
        events = unpackInbox(String(r.body))
      } catch (error) {
        // The lane stops at this row, every time: the rows before it are delivered, none after it.
        if (read > 0) return true
        if (stopAtBad) return false
        throw new InboxRowError('the PostgreSQL queue', id, st.lane, error)
      }
      st.cursor = { xid: String(r.xid_text), id }
      read++
      const done = new Uint8Array(Math.ceil(events.length / 8))
      if (r.done) done.set((r.done as Buffer).subarray(0, done.length))
      const left = events.length - countDone(done)
      if (left > 0) st.rows.push({ id, lane: st.lane, xid: String(r.xid_text), events, next: 0, done, left })
    }
    return true
  }

  /**
   * The read found no row: whether rows of the lane wait past the bound, behind a write transaction still open
   * somewhere on the server (at most every HELD_BACK_CHECK_MS). Reported once two looks in a row found rows waiting
   * (a relay's own transactions last milliseconds), naming the oldest open write transaction when this relay's role
   * may see it.
   */
  private async lookWhyHeldBack(st: OwnedLane): Promise<void> {
    const t = Date.now()
    const last = this.heldBack.get(st.lane)
    if (last && t - last.at < HELD_BACK_CHECK_MS) return
    const { rows } = await this.host.pool.query(
      `SELECT EXISTS (SELECT 1 FROM relay_inbox WHERE project_id = $1 AND (xid, id) > ($2::xid8, $3::bigint)
                        AND xid >= pg_snapshot_xmin(pg_current_snapshot())) AS waiting,
              (SELECT format('process %s in database %s (%s), open since %s', pid, datname,
                             coalesce(nullif(application_name, ''), 'no application name'), xact_start)
               FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
               ORDER BY age(backend_xid) DESC LIMIT 1) AS oldest`,
      [st.lane, st.cursor.xid, st.cursor.id]
    )
    const r = rows[0] as Row
    const waiting = Boolean(r.waiting)
    const reason =
      waiting && last?.waiting
        ? `delivery of ${projectOf(st.lane)} waits for a write transaction left open on the PostgreSQL server (${r.oldest ? String(r.oldest) : 'one this database role cannot see'}): no relay reads events queued after it began until it ends. End it, or set idle_in_transaction_session_timeout for its application`
        : undefined
    this.heldBack.set(st.lane, { waiting, reason, at: t })
  }

  private async leaseFromInbox(
    st: OwnedLane,
    limit: number,
    leaseMs: number,
    now: number,
    tableHasRows: boolean
  ): Promise<Job[]> {
    type Taken = { readonly row: InboxRow; readonly index: number; readonly event: InboxEvent }
    // The events looked at, in order (at most LEASE_ROUNDS leases' worth: a parked backlog of one user is moved,
    // never walked whole at once).
    const look: Taken[] = []
    const maxLook = limit * LEASE_ROUNDS
    const seen = new Map<InboxRow, number>()
    for (let r = 0; look.length < maxLook;) {
      const row = st.rows[r]
      if (row === undefined) {
        if (!(await this.readInbox(st, look.length > 0))) break
        continue
      }
      const events = row.events as InboxEvent[]
      let at = seen.get(row) ?? row.next
      for (; at < events.length && look.length < maxLook; at++)
        if (!isDone(row.done, at)) look.push({ row, index: at, event: events[at] as InboxEvent })
      seen.set(row, at)
      if (at >= events.length) r++
    }
    if (look.length === 0) return []
    let inTable = new Set<string>()
    if (tableHasRows) {
      const users = [...new Set(look.map((t) => t.event[2]))].filter((u) => !st.users.has(u))
      inTable = await this.host.usersWithOpenRows(st.lane, users)
    }
    const take: Taken[] = []
    const hold: Taken[] = []
    const placement = new InboxPlacement(
      (user) => st.users.has(user),
      (user) => inTable.has(user)
    )
    const convert = placement.convert
    const nextOf = new Map<InboxRow, number>()
    for (const t of look) {
      if (take.length >= limit) break
      nextOf.set(t.row, t.index + 1)
      ;(placement.leases(t.event[2]) ? take : hold).push(t)
    }
    if (hold.length > 0 || convert.size > 0) {
      const gone: Flying[] = []
      for (const user of convert) gone.push(...[...(st.users.get(user) ?? [])].sort((a, b) => a.job.id - b.job.id))
      const rows: TableRow[] = [
        ...gone.map((f): TableRow => ({
          job: f.job,
          state: 'leased',
          leaseToken: f.job.lease,
          leaseUntil: f.leaseUntil
        })),
        ...hold.map(({ row, index, event }): TableRow => ({
          job: leasedJob(inboxJobId(row, index), st.lane, event, 0, null, 0),
          state: 'held'
        }))
      ]
      const marks = new Map<InboxRow, number[]>()
      for (const f of gone) markDone(marks, f.row, f.index)
      for (const { row, index } of hold) markDone(marks, row, index)
      st.open = true
      const written = await this.writeMoving(st, rows, marks)
      if (!written) return []
      written.apply()
      const at = Date.now()
      gone.forEach((f, i) => {
        this.land(st, f)
        this.moved.set(f.job.id, { id: written.ids[i] as number, at })
        this.noteTableLeases(st.lane, [written.ids[i] as number], f.leaseUntil)
      })
    }
    // Every await above may have seen the claim end (its connection failed): nothing then flies from a lane this relay
    // no longer owns.
    if (!this.holds(st)) return []
    for (const [row, next] of nextOf) row.next = Math.max(row.next, next)
    while (st.rows.length > 0 && (st.rows[0] as InboxRow).next >= ((st.rows[0] as InboxRow).events?.length ?? 0))
      (st.rows.shift() as InboxRow).events = undefined
    const token = newLeaseToken()
    return take.map(({ row, index, event }) => {
      const job = leasedJob(inboxJobId(row, index), st.lane, event, 0, null, token)
      const f: Flying = { job, row, index, leaseUntil: now + leaseMs }
      this.flying.set(job.id, f)
      let mine = st.users.get(job.userKey)
      if (mine === undefined) st.users.set(job.userKey, (mine = new Set()))
      mine.add(f)
      return job
    })
  }

  /** A flying event is no longer in flight here (settled, or moved to relay_events). */
  private land(st: OwnedLane, f: Flying): void {
    this.flying.delete(f.job.id)
    const mine = st.users.get(f.job.userKey)
    mine?.delete(f)
    if (mine?.size === 0) st.users.delete(f.job.userKey)
  }

  /** The events a settle names, split as resolveRefs says, by this relay's flying and moved events. */
  resolve(refs: readonly JobRef[]): { table: JobRef[]; mem: Flying[]; alias: Map<number, number> } {
    return resolveRefs(refs, this.flying, this.moved)
  }

  /**
   * Extends flying leases, only on lanes this relay still owns (read from the database: a relay frozen past its
   * claim learns here that another relay owns the lane now, before it sends). Returns the ids still held.
   */
  async renew(
    mem: readonly Flying[],
    leaseUntil: number
  ): Promise<{ ids: number[]; moved: Array<{ jobId: number; ref: JobRef }> }> {
    const byLane = groupByLane(mem)
    const out: number[] = []
    const moved: Array<{ jobId: number; ref: JobRef }> = []
    for (const [lane, fs] of byLane) {
      const st = this.lanes.get(lane)
      // (Not while its claim is lost: nothing more goes out under it until it is taken back.)
      if (!st || st.suspended) continue
      const { rows } = await this.host.pool.query('SELECT epoch FROM relay_lanes WHERE project_id = $1', [lane])
      if (rows.length === 0 || Number((rows[0] as Row).epoch) !== st.epoch) {
        this.forget(st)
        continue
      }
      for (const f of fs) {
        if (this.flying.get(f.job.id) !== f) {
          const ref = this.movedRef(f)
          if (ref) moved.push({ jobId: f.job.id, ref })
          continue
        }
        f.leaseUntil = Math.max(f.leaseUntil, leaseUntil)
        out.push(f.job.id)
      }
    }
    return { ids: out, moved }
  }

  /**
   * A flying event that moved to relay_events (still leased by its lease) since its settle or renewal named it:
   * its ref there, for the caller to apply the write to that row instead.
   */
  private movedRef(f: Flying): JobRef | undefined {
    const to = this.moved.get(f.job.id)
    return to && { id: to.id, lease: f.job.lease, projectId: f.job.projectId }
  }

  /**
   * Writes what happened to flying events, lane by lane, each in an owner's transaction. Back to relay_events (a
   * retry, a release, a lease taken back), an event takes every other flying event of its user with it (those as
   * still leased by their lease), so the table holds the user's events in their order of arrival.
   */
  async settle(mem: readonly Flying[], outcome: FlyingOutcome): Promise<JobRef[]> {
    const groups = groupByLane(mem)
    // Delivered events of several buckets (a lease of a project draws from each this relay owns): one write.
    if (outcome.kind === 'complete' && groups.size > 1) return this.completeAll(groups)
    const moved: JobRef[] = []
    for (const [lane, fs] of groups) {
      const st = this.lanes.get(lane)
      if (!st) continue
      await this.inTurn(st, async () => {
        if (this.lanes.get(lane) !== st) return
        // A lease in between may have moved some of them to relay_events (their user's next events came): those are
        // the caller's to settle there.
        const live: Flying[] = []
        for (const f of fs) {
          if (this.flying.get(f.job.id) === f) live.push(f)
          else {
            const ref = this.movedRef(f)
            if (ref) moved.push(ref)
          }
        }
        if (live.length === 0) return
        const rows: TableRow[] = []
        const movers: Flying[] = []
        const gone: Flying[] = []
        if (outcome.kind === 'complete') gone.push(...live)
        else if (outcome.kind === 'dead') {
          const { info, now } = outcome
          for (const f of live) {
            rows.push({
              job: f.job,
              state: 'dead',
              attempts: info.sent ? 1 : 0,
              firstAttemptAt: info.sent ? now : null,
              dead: info,
              deadAt: now
            })
            movers.push(f)
          }
        } else {
          const named = new Set(live)
          const all = new Set<Flying>()
          for (const f of live) for (const g of st.users.get(f.job.userKey) ?? []) all.add(g)
          for (const f of [...all].sort((a, b) => a.job.id - b.job.id)) {
            rows.push(
              named.has(f)
                ? {
                    job: f.job,
                    state: 'pending',
                    nextAttemptAt: outcome.readyAt ?? f.job.receivedAt,
                    ...(outcome.failed && {
                      attempts: 1,
                      firstAttemptAt: outcome.failed.now,
                      lastError: outcome.failed.error
                    })
                  }
                : { job: f.job, state: 'leased', leaseToken: f.job.lease, leaseUntil: f.leaseUntil }
            )
            movers.push(f)
          }
        }
        const marks = new Map<InboxRow, number[]>()
        for (const f of [...gone, ...movers]) markDone(marks, f.row, f.index)
        if (rows.length > 0) st.open = true
        const written = rows.length === 0 ? await this.marksOnly(st, marks) : await this.writeMoving(st, rows, marks)
        if (!written) return
        written.apply()
        for (const f of gone) this.land(st, f)
        const at = Date.now()
        movers.forEach((f, i) => {
          this.land(st, f)
          this.moved.set(f.job.id, { id: written.ids[i] as number, at })
          // Still leased by the caller's lease there: this relay holds it until that lease settles.
          if ((rows[i] as TableRow).state === 'leased')
            this.noteTableLeases(st.lane, [written.ids[i] as number], f.leaseUntil)
        })
      })
    }
    return moved
  }

  /** Delivered flying events of several lanes, written in one round trip in the lanes' turns (see marksOnlyOf). */
  private async completeAll(groups: ReadonlyMap<string, readonly Flying[]>): Promise<JobRef[]> {
    const moved: JobRef[] = []
    const owned = [...groups.keys()]
      .sort()
      .map((lane) => this.lanes.get(lane))
      .filter((st): st is OwnedLane => st !== undefined)
    await this.inTurns(owned, async () => {
      const work: Array<{ st: OwnedLane; live: Flying[]; marks: Map<InboxRow, number[]> }> = []
      for (const st of owned) {
        if (this.lanes.get(st.lane) !== st) continue
        const live: Flying[] = []
        for (const f of groups.get(st.lane) ?? []) {
          if (this.flying.get(f.job.id) === f) live.push(f)
          else {
            const ref = this.movedRef(f)
            if (ref) moved.push(ref)
          }
        }
        if (live.length === 0) continue
        const marks = new Map<InboxRow, number[]>()
        for (const f of live) markDone(marks, f.row, f.index)
        work.push({ st, live, marks })
      }
      if (work.length === 0) return
      const written = await this.marksOnlyOf(work)
      work.forEach(({ st, live }, i) => {
        const w = written[i]
        if (!w) return
        w.apply()
        for (const f of live) this.land(st, f)
      })
    })
    return moved
  }

  /** Runs `fn` in the turns of all `lanes` (taken in the order given: callers sort them, so that none waits in a cycle). */
  private inTurns<T>(lanes: readonly OwnedLane[], fn: () => Promise<T>, at = 0): Promise<T> {
    const st = lanes[at]
    return st ? this.inTurn(st, () => this.inTurns(lanes, fn, at + 1)) : fn()
  }

  /** Leases of relay_events that takeovers took back since the last call (counted once). */
  takeTakenBack(): number {
    const n = this.takenBack
    this.takenBack = 0
    return n
  }

  /** Flying leases that ended by `leasesEndBy` go back to relay_events as ready; returns how many. */
  async recover(leasesEndBy: number): Promise<number> {
    const forgetBefore = Date.now() - MOVED_KEPT_MS
    for (const [id, { at }] of this.moved) if (at < forgetBefore) this.moved.delete(id)
    const expired = [...this.flying.values()].filter((f) => f.leaseUntil <= leasesEndBy)
    // Those moved meanwhile are leased rows of relay_events now, which the recovery that follows looks at.
    await this.settle(expired, { kind: 'pending' })
    return expired.filter((f) => this.flying.get(f.job.id) !== f).length
  }

  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.pinger)
    await this.connecting?.catch(() => undefined)
    const c = this.owner
    this.owner = undefined
    for (const st of [...this.lanes.values()]) this.forget(st, false)
    await c?.end().catch(() => undefined)
  }
}

/** Set on an error a transaction's COMMIT failed with (see mayHaveCommitted). */
export const COMMIT_SENT = Symbol('commit sent')

/**
 * Whether a write that failed with `error` may have committed: its connection broke after the statement went out,
 * or it never heard back. Not an error PostgreSQL answered for a statement (the transaction rolled back) nor a
 * failed connect (nothing was sent).
 */
export function mayHaveCommitted(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown }
  if (typeof code === 'string') {
    // A connect refused or unresolved, or PostgreSQL starting up or shutting down (57P03: only when connecting).
    if (['ECONNREFUSED', 'ENOENT', 'ENOTFOUND', 'EAI_AGAIN', '57P03'].includes(code)) return false
    // An SQLSTATE for the statement, not for the connection ending (class 08, 57P01 and 57P02 end the session).
    if (/^[0-9A-Z]{5}$/.test(code)) return code.startsWith('08') || code === '57P01' || code === '57P02'
  }
  // Waiting for a connection (the pool's timeout, or the connect's): nothing was sent.
  return !(
    typeof message === 'string' && /timeout exceeded when trying to connect|due to connection timeout/.test(message)
  )
}

/** An inbox event's job id: above every relay_events id, in arrival order within its row. */
function inboxJobId(row: InboxRow, index: number): number {
  return INBOX_ID_BASE + row.id * INBOX_SLOT + index
}

function groupByLane(mem: readonly Flying[]): Map<string, Flying[]> {
  const out = new Map<string, Flying[]>()
  for (const f of mem) {
    let list = out.get(f.job.projectId)
    if (!list) out.set(f.job.projectId, (list = []))
    list.push(f)
  }
  return out
}

/**
 * Saves which events of some inbox rows are done (inside the caller's transaction), in one statement: a row with
 * none left is deleted. `after` is nextMarks'.
 */
async function saveMarks(
  c: pg.PoolClient,
  after: ReadonlyArray<readonly [InboxRow, Uint8Array, number]>
): Promise<void> {
  if (after.length > 0)
    await c.query(
      `WITH marks AS (SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::int[]) AS m(id, done, left_events)),
       gone AS (DELETE FROM relay_inbox i USING marks m WHERE i.id = m.id AND m.left_events <= 0)
       UPDATE relay_inbox i SET done = m.done, left_events = m.left_events FROM marks m WHERE i.id = m.id AND m.left_events > 0`,
      [after.map(([row]) => row.id), after.map(([, done]) => Buffer.from(done)), after.map(([, , left]) => left)]
    )
}
