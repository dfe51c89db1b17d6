import { mkdirSync, realpathSync, statfsSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import {
  dedupKey,
  GroupCommit,
  LEASE_ROUNDS,
  rowToDeadLetter,
  sortCandidates,
  type Candidate,
  type DeadLetter,
  type DeadLetterInfo,
  type EnqueueResult,
  newLeaseToken,
  splitRefs,
  type Job,
  type JobRef,
  type EventRow,
  type ListDeadOptions,
  type NewEvent,
  type PruneResult,
  type Queue,
  type QueueStats,
  type Selection,
  type UserState,
  InboxRowError
} from './queue'
import { DiskReserve } from './disk-reserve'
import {
  countDone,
  type EventRowFields,
  InboxPlacement,
  type Flying,
  type FlyingOutcome,
  INBOX_ID_BASE,
  INBOX_ROW_EVENTS,
  INBOX_SLOT,
  type InboxEvent,
  type InboxRow,
  isDone,
  type LaneInbox,
  leasedJob,
  markDone,
  nextMarks,
  packInbox,
  resolveRefs,
  unpackInbox
} from './inbox'
import { OneFlowError } from '@oneflow-seg/core'

const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  message_id TEXT NOT NULL,
  source_name TEXT NOT NULL,
  project_id TEXT NOT NULL,
  user_key TEXT NOT NULL,
  body TEXT NOT NULL,
  received_at INTEGER NOT NULL,
  state TEXT NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  lease_until INTEGER,
  lease_token INTEGER,
  first_attempt_at INTEGER,
  last_error TEXT,
  dead_reason TEXT,
  dead_status INTEGER,
  dead_response TEXT,
  dead_at INTEGER
);
DROP INDEX IF EXISTS events_ready;
DROP INDEX IF EXISTS events_user;
CREATE INDEX IF NOT EXISTS events_waiting ON events (project_id, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS events_inflight ON events (project_id, user_key) WHERE state = 'leased';
CREATE INDEX IF NOT EXISTS events_later ON events (project_id, user_key, next_attempt_at) WHERE state = 'pending' AND next_attempt_at > received_at;
CREATE INDEX IF NOT EXISTS events_held ON events (project_id, user_key) WHERE state = 'held';
CREATE INDEX IF NOT EXISTS events_held_order ON events (project_id, id) WHERE state = 'held';
CREATE INDEX IF NOT EXISTS events_dead ON events (dead_at) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS events_open ON events (project_id, user_key) WHERE state IN ('pending', 'held', 'leased');
CREATE TABLE IF NOT EXISTS seen (message_id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen (seen_at);
CREATE TABLE IF NOT EXISTS inbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  project_id TEXT NOT NULL,
  events INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  body TEXT NOT NULL,
  done BLOB
);
CREATE INDEX IF NOT EXISTS inbox_lane ON inbox (project_id, id);
CREATE TABLE IF NOT EXISTS counters (lane TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (lane, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS owner (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL, since INTEGER NOT NULL);
INSERT OR IGNORE INTO probe (id, at) VALUES (1, 0);
`

/** The WAL file is cut back to this size after each checkpoint (it grows with retry updates otherwise). */
const JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
/**
 * A checkpoint runs once the WAL holds this many pages: 10,000 (40 MB at 4 KB pages; under JOURNAL_SIZE_LIMIT)
 * when the disk has room to spare, SQLite's default 1,000 otherwise. On a nearly full disk a large WAL is what
 * fills it, and a checkpoint needs room in the database file to move it there.
 */
function checkpointPages(path: string): number {
  if (path === ':memory:') return 1_000
  try {
    const fs = statfsSync(dirname(path))
    return fs.bavail * fs.bsize >= 2 * 1024 ** 3 ? 10_000 : 1_000
  } catch {
    return 1_000
  }
}
/** A relay that could not claim its SQLite file tries again at most this often (ms of real time). */
const CLAIM_RETRY_MS = 1_000

/** Another relay process delivers from this SQLite file: one file serves one relay. */
export class QueueOwnedError extends OneFlowError {
  override readonly name = 'QueueOwnedError'
  readonly code = 'QUEUE_OWNED'
  readonly remedy = 'fix-config'
  constructor(path: string, pid: number | undefined) {
    super(
      `another relay process (${pid === undefined ? 'its pid unknown' : `pid ${pid} where it runs`}) is delivering from the SQLite queue ${path}; this relay still accepts events into it but delivers none while that one runs. One SQLite file serves one relay: stop the other process, give each relay its own file, or use PostgreSQL ("queue": "postgres://…") to run several`
    )
  }
}

/** The relay cannot lock `<file>.owner` (beside its SQLite file) for a reason other than another relay holding it. */
export class QueueClaimError extends OneFlowError {
  override readonly name = 'QueueClaimError'
  readonly code = 'QUEUE_CLAIM_FAILED'
  readonly remedy = 'fix-config'
  constructor(lockPath: string, cause: unknown) {
    super(
      `cannot create or lock ${lockPath}, which keeps a second relay from delivering from the same SQLite queue (${cause instanceof Error ? cause.message : String(cause)}); this relay accepts events but delivers none until it can: give it write access to that file and its directory`
    )
  }
}

/**
 * How long a settle naming an inbox job finds the events-table row the event moved to (ms of real time); a
 * lease's holder settles long before.
 */
const MOVED_KEPT_MS = 600_000
/** SQLite's page cache, in KiB (8 MB; the default is 2 MB). */
const CACHE_KIB = 8 * 1024
/** compact() gives back at most this many free pages per call, so one call never holds the writer for long. */
const VACUUM_PAGES_PER_CALL = 4096
/** …and only bothers when at least this many pages are free… */
const VACUUM_MIN_FREE_PAGES = 256
/** …in steps of at most this many pages (1 MiB of WAL at 4 KB pages), each checkpointed before the next… */
const VACUUM_STEP_PAGES = 256
/** …and none smaller than this (a disk with less room than four such steps gets its room from delivery first). */
const VACUUM_MIN_STEP_PAGES = 16

export interface SqliteQueueOptions {
  /** Group commit: write at most this long after the first waiting event (default 2 ms). */
  readonly commitWindowMs?: number
  /** Group commit: write at once when this many events wait (default 4,096). */
  readonly commitMaxEvents?: number
  /** Room kept back on the disk for recovering from a full disk (default 16 MiB; 0: none). See DiskReserve. */
  readonly reserveBytes?: number
  /** The disk filled (true) or has room again (false): ingest is refused in between. */
  readonly onSpace?: (full: boolean) => void
}

/** The disk reserve's default size: room for hundreds of delivery rounds and the checkpoints between them. */
export const DEFAULT_RESERVE_BYTES = 16 * 1024 * 1024

/** The reserve for a queue at `path`: what was asked, but never more than an eighth of its file system. */
function reserveSize(path: string, asked: number): number {
  if (path === ':memory:' || asked <= 0) return 0
  try {
    const fs = statfsSync(dirname(path))
    return Math.min(asked, Math.floor((fs.blocks * fs.bsize) / 8))
  } catch {
    return asked
  }
}

type Row = EventRow

/** A dead letter's size: its event and the service's answer, in bytes. */
const DEAD_BYTES = 'length(CAST(body AS BLOB)) + coalesce(length(CAST(dead_response AS BLOB)), 0)'

/** A leased event's columns, in the order SqliteQueue.LEASED_ROWS selects them. */
type LeasedRow = [
  id: number,
  messageId: string,
  sourceName: string,
  projectId: string,
  userKey: string,
  body: string,
  receivedAt: number,
  attempts: number,
  firstAttemptAt: number | null
]

/** What one events row counts for in the counters. */
interface CountedRow {
  readonly project_id?: unknown
  readonly state: unknown
  /** 1 when the event has failed a send before (it waits for a retry while pending). */
  readonly failed?: unknown
  readonly bytes?: unknown
}

/**
 * Changes to the counters, summed per (lane, name) so a statement that moves many rows writes one upsert per
 * counter. Per lane: `undelivered` (inbox, pending, held, leased), `leased`, `retrying` (pending or held after
 * a failed send); for all lanes (lane ''): `dead` and `dead_bytes`.
 */
class Tally {
  private readonly changes = new Map<string, number>()

  add(lane: string, name: string, n: number): void {
    if (n === 0) return
    const key = `${lane}\u0000${name}`
    this.changes.set(key, (this.changes.get(key) ?? 0) + n)
  }

  /** Adds (sign 1) or removes (sign -1) what `rows` events in one state count for. */
  count(row: CountedRow, sign: number, deadBytes = 0): void {
    const lane = String(row.project_id ?? '')
    const state = String(row.state)
    if (state === 'dead') {
      this.add('', 'dead', sign)
      this.add('', 'dead_bytes', deadBytes)
      return
    }
    this.add(lane, 'undelivered', sign)
    if (state === 'leased') this.add(lane, 'leased', sign)
    else if (Number(row.failed) > 0) this.add(lane, 'retrying', sign)
  }

  entries(): Array<[lane: string, name: string, value: number]> {
    return [...this.changes]
      .filter(([, v]) => v !== 0)
      .map(([key, v]) => {
        const [lane, name] = key.split('\u0000') as [string, string]
        return [lane, name, v]
      })
  }
}

/** A write failed because of a value (binding, constraint, size), not because the database is unwell. */
function causedByData(error: unknown): boolean {
  const code = String((error as { code?: unknown }).code ?? '')
  if (/^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|CORRUPT|READONLY|NOTADB|NOMEM|PROTOCOL|INTERRUPT|PERM|AUTH)/.test(code))
    return false
  return code.startsWith('SQLITE_') || error instanceof TypeError || error instanceof RangeError
}

/**
 * The default queue: one SQLite file in WAL mode with synchronous=FULL, so a commit survives a crash or a
 * power loss. Ingest is group-committed (many requests, one fsync), which keeps FULL close to NORMAL's speed,
 * and writes each request's accepted events as one inbox row; leases hand them out from there, in flight in this
 * process's memory (docs/relay-queue.md, "SQLite: events leased from the inbox").
 * One relay process per file (SQLite has one writer); use PostgreSQL to run several.
 */
export class SqliteQueue implements Queue {
  private readonly db: Database.Database
  private readonly commits: GroupCommit
  private readonly pageSize: number
  /** Events leased straight from the inbox, by job id (docs/relay-queue.md, "SQLite: events leased from the inbox"). */
  private readonly flying = new Map<number, Flying>()
  /** Per lane, per user: their flying events (a user with one is in flight). */
  private readonly flyingUsers = new Map<string, Map<string, Set<Flying>>>()
  private readonly laneInbox = new Map<string, LaneInbox>()
  /** Lanes whose inbox may hold rows not read yet (set by ingest, replays and the periodic recovery). */
  private inboxMore = new Set<string>()
  /** Inbox job ids whose event moved to the events table, and its id there: settles that name the job find it. */
  private readonly moved = new Map<number, { readonly id: number; readonly at: number }>()
  private readonly reserve: DiskReserve | undefined
  /** The disk filled: the reserve is released and ingest refused until it is made again. */
  private full = false
  private readonly onSpace: ((full: boolean) => void) | undefined

  constructor(
    readonly path: string,
    options: SqliteQueueOptions = {}
  ) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    this.db = new Database(path)
    // Free pages go back to the file system (compact()), so the file shrinks once a backlog is delivered. A file
    // made before this setting existed is converted once, here.
    if (Number(this.db.pragma('auto_vacuum', { simple: true })) !== 2) {
      this.db.pragma('auto_vacuum = INCREMENTAL')
      if (this.db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'events'").get() !== undefined)
        this.db.exec('VACUUM')
    }
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = FULL')
    this.db.pragma('busy_timeout = 5000')
    this.db.pragma(`journal_size_limit = ${JOURNAL_SIZE_LIMIT}`)
    // Checkpoints copy the WAL into the database file: fewer, larger ones write a page changed many times (an
    // event inserted, leased, delivered) once instead of at each step. A larger page cache keeps the indexes of a
    // big backlog in memory (the default is 2 MB).
    this.db.pragma(`wal_autocheckpoint = ${checkpointPages(path)}`)
    this.db.pragma(`cache_size = -${CACHE_KIB}`)
    this.db.exec(SCHEMA)
    // Files made before leases carried a token (docs/relay-queue.md) get the column; their leases have none.
    if (!(this.db.pragma('table_info(events)') as Array<{ name: string }>).some((c) => c.name === 'lease_token'))
      this.db.exec('ALTER TABLE events ADD COLUMN lease_token INTEGER')
    // Files made before events were leased straight from the inbox get its `done` column (see InboxRow).
    if (!(this.db.pragma('table_info(inbox)') as Array<{ name: string }>).some((c) => c.name === 'done'))
      this.db.exec('ALTER TABLE inbox ADD COLUMN done BLOB')
    this.pageSize = Number(this.db.pragma('page_size', { simple: true }))
    this.onSpace = options.onSpace
    const reserveBytes = reserveSize(path, options.reserveBytes ?? DEFAULT_RESERVE_BYTES)
    if (reserveBytes > 0) {
      this.reserve = new DiskReserve(`${path}.reserve`, reserveBytes)
      // No room for the reserve: the disk is as good as full; ingest waits until there is room for it.
      if (!this.reserve.arm()) {
        this.full = true
        this.onSpace?.(true)
      }
    }
    const insertSeen = this.db.prepare('INSERT OR IGNORE INTO seen (message_id, seen_at) VALUES (?, ?)')
    const insertDead = this.db.prepare(
      "INSERT INTO events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state, dead_reason, dead_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'dead', ?, ?)"
    )
    // Ingest writes a request's accepted events as one inbox row (per lane), after the dedup check; lease()
    // hands them out from there (leaseFromInbox). See docs/relay-ingest.md.
    const writeAll = this.db.transaction((requests: ReadonlyArray<readonly NewEvent[]>) => {
      const inboxed = new Map<string, number>()
      const tally = new Tally()
      const results = requests.map((events) => {
        let accepted = 0
        let dead = 0
        const lanes = new Map<string, InboxEvent[]>()
        for (const e of events) {
          if (e.deadReason !== undefined) {
            insertDead.run(
              e.messageId,
              e.sourceName,
              e.projectId,
              e.userKey,
              e.body,
              e.receivedAt,
              e.receivedAt,
              e.deadReason.slice(0, 1000),
              e.receivedAt
            )
            tally.add('', 'dead', 1)
            tally.add('', 'dead_bytes', Buffer.byteLength(e.body))
            dead++
            continue
          }
          if (insertSeen.run(dedupKey(e), e.dedupFrom ?? e.receivedAt).changes === 0) continue
          let lane = lanes.get(e.projectId)
          if (lane === undefined) lanes.set(e.projectId, (lane = []))
          lane.push([e.messageId, e.sourceName, e.userKey, e.body, e.receivedAt])
          accepted++
        }
        for (const [projectId, lane] of lanes) {
          this.writeInbox(projectId, lane)
          inboxed.set(projectId, (inboxed.get(projectId) ?? 0) + lane.length)
          tally.add(projectId, 'undelivered', lane.length)
        }
        return { accepted, duplicates: events.length - accepted - dead }
      })
      this.writeTally(tally)
      return { results, inboxed }
    })
    const writeAndCount = (requests: ReadonlyArray<readonly NewEvent[]>) => {
      const { results, inboxed } = this.guard(() => writeAll(requests))
      for (const lane of inboxed.keys()) this.inboxMore.add(lane)
      return results
    }
    this.inboxMore = new Set(this.countInbox().keys())
    this.initCounters()
    this.commits = new GroupCommit(
      writeAndCount,
      options.commitWindowMs ?? 2,
      options.commitMaxEvents ?? 4096,
      causedByData
    )
  }

  private countInbox(): Map<string, number> {
    const rows = this.statement('SELECT project_id, sum(events) AS n FROM inbox GROUP BY project_id').all() as Row[]
    return new Map(rows.map((r) => [String(r.project_id), Number(r.n)]))
  }

  /**
   * The queue's figures are counters kept in the database, changed in the same transaction as the rows they
   * count (by this relay and by the admin commands alike), so reading them never scans the queue. A file made
   * before they existed gets them from one scan, here.
   */
  private initCounters(): void {
    if (this.statement("SELECT 1 FROM counters WHERE lane = '' AND name = 'initialized'").get() !== undefined) return
    this.db.transaction(() => {
      this.statement('DELETE FROM counters').run()
      const tally = new Tally()
      for (const r of this.statement(
        `SELECT project_id, state, attempts > 0 AS failed, count(*) AS n,
           sum(CASE WHEN state = 'dead' THEN ${DEAD_BYTES} ELSE 0 END) AS bytes
         FROM events GROUP BY project_id, state, attempts > 0`
      ).all() as Row[])
        tally.count(
          { project_id: r.project_id, state: r.state, failed: r.failed, bytes: r.bytes },
          Number(r.n),
          Number(r.bytes)
        )
      for (const [lane, n] of this.countInbox()) tally.add(lane, 'undelivered', n)
      tally.add('', 'initialized', 1)
      this.writeTally(tally)
    })()
  }

  /** Adds a tally's changes to the counters (inside the caller's transaction). */
  private writeTally(tally: Tally): void {
    for (const [lane, name, value] of tally.entries())
      this.statement(
        'INSERT INTO counters (lane, name, value) VALUES (?, ?, ?) ON CONFLICT (lane, name) DO UPDATE SET value = value + excluded.value'
      ).run(lane, name, value)
  }

  /** What the rows `ids` count for now (lane, state, failed before, dead-letter bytes). */
  private countedRows(ids: readonly number[]): CountedRow[] {
    if (ids.length === 0) return []
    return this.statement(
      `SELECT project_id, state, attempts > 0 AS failed, CASE WHEN state = 'dead' THEN ${DEAD_BYTES} ELSE 0 END AS bytes
       FROM events WHERE id IN (SELECT value FROM json_each(?))`
    ).all(JSON.stringify(ids)) as CountedRow[]
  }

  /** Deletes events and takes them off the counters (recount without reading again rows that are gone). */
  private remove(ids: readonly number[]): void {
    const tally = new Tally()
    for (const r of this.countedRows(ids)) tally.count(r, -1, -Number(r.bytes))
    this.update(ids, 'DELETE FROM events')
    this.writeTally(tally)
  }

  /** Runs `change` on the rows `ids` and moves their counts from what they were to what they are after it. */
  private recount(ids: readonly number[], change: () => void): void {
    const tally = new Tally()
    for (const r of this.countedRows(ids)) tally.count(r, -1, -Number(r.bytes))
    change()
    for (const r of this.countedRows(ids)) tally.count(r, 1, Number(r.bytes))
    this.writeTally(tally)
  }

  enqueue(events: readonly NewEvent[]): Promise<EnqueueResult> {
    return this.commits.add(events)
  }

  /**
   * Events that wait in the events table (retries, users parked behind them, leases given back) first: they are
   * older than anything still in the inbox. Then events straight from the inbox, leased in memory.
   */
  async lease(projectId: string, limit: number, leaseMs: number, now: number): Promise<Job[]> {
    this.claim(true)
    if (this.takeOver) await this.recoverLeases(now)
    if (this.laneHasOpenRows(projectId)) {
      const jobs = this.bookkeeping(() => this.leaseFromTable(projectId, limit, leaseMs, now))
      if (jobs.length > 0) return jobs
    }
    return this.inboxMore.has(projectId) ? this.leaseFromInbox(projectId, limit, leaseMs, now) : []
  }

  /** Leases events of the events table (inside the caller's transaction). */
  private leaseFromTable(projectId: string, limit: number, leaseMs: number, now: number): Job[] {
    const candidates = this.statement(SqliteQueue.DELIVERY_STATEMENTS.candidates)
    const unhold = this.statement(SqliteQueue.DELIVERY_STATEMENTS.unholdUser)
    for (let round = 0; round < LEASE_ROUNDS; round++) {
      const found = candidates.all({ project: projectId, now, limit }) as Array<
        Candidate & { blocked: number; held: number }
      >
      if (found.length === 0) return []
      // A user with events flying from the inbox is in flight too (in practice a user has rows here or events
      // flying, never both: see leaseFromInbox).
      const flying = this.flyingUsers.get(projectId)
      const states = new Map(
        found.map((c) => [
          c.userKey,
          { blocked: c.blocked === 1 || flying?.has(c.userKey) === true, held: c.held === 1 }
        ])
      )
      const plan = sortCandidates(found, (user) => states.get(user) as UserState)
      this.update(plan.hold, "UPDATE events SET state = 'held'")
      for (const user of plan.unhold) unhold.run({ project: projectId, user })
      if (plan.lease.length > 0) {
        // The rows are read back as arrays, not with RETURNING *: objects of every column cost the lease more
        // than the UPDATE itself (docs/relay-queue.md, "Indexes").
        const token = newLeaseToken()
        const ids = JSON.stringify(plan.lease)
        this.update(
          plan.lease,
          "UPDATE events SET state = 'leased', lease_until = ?, lease_token = ?",
          now + leaseMs,
          token
        )
        const leased = this.statementAs('raw', SqliteQueue.LEASED_ROWS).all(ids, token) as LeasedRow[]
        // Ready (pending) before, leased now: the lease's own counts.
        const tally = new Tally()
        const jobs = leased.map(
          ([id, messageId, sourceName, lane, userKey, body, receivedAt, attempts, firstAttemptAt]) => {
            tally.add(lane, 'leased', 1)
            if (attempts > 0) tally.add(lane, 'retrying', -1)
            return leasedJob(
              id,
              lane,
              [messageId, sourceName, userKey, body, receivedAt],
              attempts,
              firstAttemptAt,
              token
            )
          }
        )
        this.writeTally(tally)
        return jobs.sort((a, b) => a.id - b.id)
      }
    }
    return []
  }

  /**
   * This process's claim on the file: a connection to `<path>.owner` holding an exclusive lock (an open
   * `BEGIN EXCLUSIVE`). The kernel drops it when the process ends, however it ends; it does not run out while
   * the process lives, frozen or not; and it works between containers sharing a volume, whatever their pids.
   */
  private ownerLock: Database.Database | undefined
  private claimTriedAt = -Infinity
  /** Why the last claim failed, when it was not another relay holding the file. */
  private claimError: QueueClaimError | undefined
  /** The claim was just taken: the next recovery takes back every lease in the table (their holder is gone). */
  private takeOver = false

  /**
   * Claims the file for this process (what is in flight lives in this process's memory, so two relays on one
   * file would each deliver everything). Throws QueueOwnedError while another process holds it (`orThrow`), or
   * returns false.
   */
  private claim(orThrow: boolean): boolean {
    if (this.ownerLock !== undefined || this.path === ':memory:') return true
    const t = Date.now()
    if (t - this.claimTriedAt >= CLAIM_RETRY_MS) {
      this.claimTriedAt = t
      this.claimError = undefined
      // Beside the real file (a symlinked path must not get a lock of its own).
      const lockPath = `${realpathSync(this.path)}.owner`
      let lock: Database.Database | undefined
      try {
        lock = new Database(lockPath, { timeout: 0 })
        // A real write first: SQLite opens a file it may not write read-only, where BEGIN EXCLUSIVE would succeed
        // without locking anything (SQLITE_READONLY here); a holder's lock makes it SQLITE_BUSY.
        lock.pragma('user_version = 1')
        lock.exec('BEGIN EXCLUSIVE')
        this.ownerLock = lock
      } catch (error) {
        lock?.close()
        if ((error as { code?: string }).code !== 'SQLITE_BUSY') this.claimError = new QueueClaimError(lockPath, error)
      }
      if (this.ownerLock !== undefined) {
        // The lock proves no other relay lives on this file: what it left in flight is taken back at once (the next
        // recovery), and whatever was written meanwhile is this one's to deliver.
        this.takeOver = true
        for (const lane of this.countInbox().keys()) this.inboxMore.add(lane)
        try {
          // For the message another relay shows (the lock itself cannot be read while held).
          this.statement('INSERT OR REPLACE INTO owner (id, pid, since) VALUES (1, ?, ?)').run(process.pid, t)
        } catch {
          // Only what the message says: the claim holds without it.
        }
        return true
      }
    }
    if (!orThrow) return false
    if (this.claimError) throw this.claimError
    const holder = this.statement('SELECT pid FROM owner WHERE id = 1').pluck().get() as number | undefined
    throw new QueueOwnedError(this.path, holder)
  }

  /**
   * Writes a lane's events as inbox rows of at most INBOX_ROW_EVENTS each (so reading one stays small whatever one
   * call enqueues), each stamped with its earliest arrival (inside the caller's transaction).
   */
  private writeInbox(lane: string, events: readonly InboxEvent[]): void {
    const insert = this.statement('INSERT INTO inbox (project_id, events, received_at, body) VALUES (?, ?, ?, ?)')
    for (let at = 0; at < events.length; at += INBOX_ROW_EVENTS) {
      const part = events.slice(at, at + INBOX_ROW_EVENTS)
      insert.run(lane, part.length, Math.min(...part.map((e) => e[4])), packInbox(part))
    }
  }

  /** Whether a lane has events waiting or in flight in the events table (one seek in events_open). */
  private laneHasOpenRows(lane: string): boolean {
    return (
      this.statement(
        "SELECT 1 FROM events WHERE project_id = ? AND state IN ('pending', 'held', 'leased') LIMIT 1"
      ).get(lane) !== undefined
    )
  }

  /** Whether a user has events waiting or in flight in the events table (one seek in events_open). */
  private userHasOpenRows(lane: string, user: string): boolean {
    return (
      this.statement(
        "SELECT 1 FROM events WHERE project_id = ? AND user_key = ? AND state IN ('pending', 'held', 'leased') LIMIT 1"
      ).get(lane, user) !== undefined
    )
  }

  /** Reads a lane's next inbox rows into memory; false when there are none. */
  private readInbox(lane: string, inbox: LaneInbox): boolean {
    const rows = this.statementAs(
      'raw',
      'SELECT id, body, done FROM inbox WHERE project_id = ? AND id > ? ORDER BY id LIMIT 16'
    ).all(lane, inbox.lastId) as Array<[number, string, Buffer | null]>
    if (rows.length === 0) {
      this.inboxMore.delete(lane)
      return false
    }
    let read = 0
    for (const [id, body, saved] of rows) {
      let events: InboxEvent[]
      try {
        events = unpackInbox(body)
      } catch (error) {
        // The lane stops at this row, every time it is read: the rows before it are delivered, none after it
        // (a user's later events must not overtake the ones it holds).
        if (read > 0) return true
        throw new InboxRowError(`the SQLite queue ${this.path}`, id, lane, error)
      }
      inbox.lastId = id
      read++
      const done = new Uint8Array(Math.ceil(events.length / 8))
      if (saved) done.set(saved.subarray(0, done.length))
      const left = events.length - countDone(done)
      // Every event done yet the row still here cannot happen (the last settle deletes it), but costs nothing.
      if (left <= 0) this.statement('DELETE FROM inbox WHERE id = ?').run(id)
      else inbox.rows.push({ id, lane, events, next: 0, done, left })
    }
    return true
  }

  /**
   * Leases events straight from a lane's inbox rows, in arrival order, with no write for them: they are in flight
   * in this process's memory (a crash leaves them in the inbox, leased again after the restart). A user already
   * in the events table (a retry, parked events, a lease given back) or in flight from an earlier lease goes to
   * the events table instead — their flying events as leased, the new ones as held — so each user is in one
   * place, and the table's order (its ids) is the user's order of arrival.
   */
  private leaseFromInbox(lane: string, limit: number, leaseMs: number, now: number): Job[] {
    let inbox = this.laneInbox.get(lane)
    if (inbox === undefined) this.laneInbox.set(lane, (inbox = { rows: [], lastId: 0 }))
    const flyingUsers = this.flyingUsers.get(lane)
    const tableHasRows = this.laneHasOpenRows(lane)
    type Taken = { readonly row: InboxRow; readonly index: number; readonly event: InboxEvent }
    const take: Taken[] = []
    const hold: Taken[] = []
    const placement = new InboxPlacement(
      (user) => flyingUsers?.has(user) === true,
      (user) => tableHasRows && this.userHasOpenRows(lane, user)
    )
    const convert = placement.convert
    const nextOf = new Map<InboxRow, number>()
    // At most this many events looked at (a parked backlog of one user is moved, never walked whole at once).
    const maxLook = limit * LEASE_ROUNDS
    let r = 0
    while (take.length < limit && take.length + hold.length < maxLook) {
      const row = inbox.rows[r]
      if (row === undefined) {
        let more: boolean
        try {
          more = this.readInbox(lane, inbox)
        } catch (error) {
          // A damaged row further on: lease what comes before it first (any other failure fails the lease).
          if (!(error instanceof InboxRowError) || take.length + hold.length === 0) throw error
          more = false
        }
        if (!more) break
        continue
      }
      const events = row.events as InboxEvent[]
      const at = nextOf.get(row) ?? row.next
      if (at >= events.length) {
        r++
        continue
      }
      nextOf.set(row, at + 1)
      if (isDone(row.done, at)) continue
      const event = events[at] as InboxEvent
      ;(placement.leases(event[2]) ? take : hold).push({ row, index: at, event })
    }
    let applyMoves = () => {}
    if (hold.length > 0 || convert.size > 0) {
      applyMoves = this.bookkeeping(() => {
        const tally = new Tally()
        const marks = new Map<InboxRow, number[]>()
        const movedNow: Array<[number, number]> = []
        const gone: Flying[] = []
        for (const user of convert) {
          for (const f of [...(flyingUsers?.get(user) ?? [])].sort((a, b) => a.job.id - b.job.id)) {
            movedNow.push([f.job.id, this.stillLeasedRow(f, tally)])
            markDone(marks, f.row, f.index)
            gone.push(f)
          }
        }
        for (const { row, index, event } of hold) {
          const [messageId, sourceName, userKey, body, receivedAt] = event
          this.insertRow({ messageId, sourceName, projectId: lane, userKey, body, receivedAt }, 'held')
          markDone(marks, row, index)
        }
        this.writeTally(tally)
        return this.afterCommit(this.writeMarks(marks), gone, movedNow)
      })
    }
    // Committed (or nothing to write): the lease's events fly.
    applyMoves()
    for (const [row, next] of nextOf) row.next = next
    while (
      inbox.rows.length > 0 &&
      (inbox.rows[0] as InboxRow).next >= ((inbox.rows[0] as InboxRow).events?.length ?? 0)
    ) {
      ;(inbox.rows.shift() as InboxRow).events = undefined
    }
    const token = newLeaseToken()
    return take.map(({ row, index, event }) => {
      const job = leasedJob(INBOX_ID_BASE + row.id * INBOX_SLOT + index, lane, event, 0, null, token)
      const f: Flying = { job, row, index, leaseUntil: now + leaseMs }
      this.flying.set(job.id, f)
      let users = this.flyingUsers.get(lane)
      if (users === undefined) this.flyingUsers.set(lane, (users = new Map()))
      let mine = users.get(job.userKey)
      if (mine === undefined) users.set(job.userKey, (mine = new Set()))
      mine.add(f)
      return job
    })
  }

  /**
   * A flying event into the events table, still leased by its lease (same token, same end), counted as leased
   * there (inside the caller's transaction); returns its id there.
   */
  private stillLeasedRow(f: Flying, tally: Tally): number {
    tally.add(f.job.projectId, 'leased', 1)
    return this.insertRow(f.job, 'leased', { leaseToken: f.job.lease, leaseUntil: f.leaseUntil })
  }

  /** A flying event is no longer in flight here (settled, or moved to the events table). */
  private land(f: Flying): void {
    this.flying.delete(f.job.id)
    const users = this.flyingUsers.get(f.job.projectId)
    const mine = users?.get(f.job.userKey)
    mine?.delete(f)
    if (mine?.size === 0) users?.delete(f.job.userKey)
    if (users?.size === 0) this.flyingUsers.delete(f.job.projectId)
  }

  /** Writes an event into the events table (inside the caller's transaction); returns its id there. */
  private insertRow(
    e: Pick<Job, 'messageId' | 'sourceName' | 'projectId' | 'userKey' | 'body' | 'receivedAt'>,
    state: 'pending' | 'held' | 'leased' | 'dead',
    more: EventRowFields = {}
  ): number {
    return Number(
      this.statement(
        `INSERT INTO events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state,
           attempts, first_attempt_at, last_error, lease_token, lease_until, dead_reason, dead_status, dead_response, dead_at)
         VALUES (@messageId, @sourceName, @projectId, @userKey, @body, @receivedAt, @nextAttemptAt, @state,
           @attempts, @firstAttemptAt, @lastError, @leaseToken, @leaseUntil, @deadReason, @deadStatus, @deadResponse, @deadAt)`
      ).run({
        messageId: e.messageId,
        sourceName: e.sourceName,
        projectId: e.projectId,
        userKey: e.userKey,
        body: e.body,
        receivedAt: e.receivedAt,
        nextAttemptAt: more.nextAttemptAt ?? e.receivedAt,
        state,
        attempts: more.attempts ?? 0,
        firstAttemptAt: more.firstAttemptAt ?? null,
        lastError: more.lastError?.slice(0, 500) ?? null,
        leaseToken: more.leaseToken ?? null,
        leaseUntil: more.leaseUntil ?? null,
        deadReason: more.dead?.reason.slice(0, 1000) ?? null,
        deadStatus: more.dead?.status ?? null,
        deadResponse: more.dead?.response?.slice(0, 2000) ?? null,
        deadAt: more.deadAt ?? null
      }).lastInsertRowid
    )
  }

  /**
   * Saves which events of some inbox rows are done (inside the caller's transaction): a row with none left is
   * deleted. Returns what to change in memory once the transaction commits.
   */
  private writeMarks(marks: ReadonlyMap<InboxRow, readonly number[]>): () => void {
    const { after, apply } = nextMarks(marks)
    for (const [row, done, left] of after) {
      if (left <= 0) this.statement('DELETE FROM inbox WHERE id = ?').run(row.id)
      else this.statement('UPDATE inbox SET done = ? WHERE id = ?').run(Buffer.from(done), row.id)
    }
    return apply
  }

  /** The events a settle names, split as resolveRefs says, by this process's flying and moved events. */
  private resolve(refs: readonly JobRef[]): { table: JobRef[]; mem: Flying[]; alias: Map<number, number> } {
    return resolveRefs(refs, this.flying, this.moved)
  }

  /**
   * Writes what happened to flying events (inside the caller's transaction); returns what to change in memory
   * once it commits. Back to the events table (a retry, a release, a lease taken back), an event takes every
   * other flying event of its user with it (those as still leased by their lease): the table then holds the
   * user's events in their order of arrival.
   */
  private settleFlying(mem: readonly Flying[], outcome: FlyingOutcome): () => void {
    if (mem.length === 0) return () => {}
    const tally = new Tally()
    const marks = new Map<InboxRow, number[]>()
    const movedNow: Array<[number, number]> = []
    const gone = new Set<Flying>()
    const leave = (f: Flying, tableId?: number) => {
      markDone(marks, f.row, f.index)
      gone.add(f)
      if (tableId !== undefined) movedNow.push([f.job.id, tableId])
    }
    if (outcome.kind === 'complete') {
      for (const f of mem) {
        tally.add(f.job.projectId, 'undelivered', -1)
        leave(f)
      }
    } else if (outcome.kind === 'dead') {
      const { info, now } = outcome
      for (const f of mem) {
        const id = this.insertRow(f.job, 'dead', {
          attempts: info.sent ? 1 : 0,
          firstAttemptAt: info.sent ? now : null,
          dead: info,
          deadAt: now
        })
        tally.add(f.job.projectId, 'undelivered', -1)
        tally.add('', 'dead', 1)
        const bytes = this.statement(`SELECT ${DEAD_BYTES} FROM events WHERE id = ?`).pluck().get(id) as number
        tally.add('', 'dead_bytes', bytes)
        leave(f, id)
      }
    } else {
      const named = new Set(mem)
      const all = new Set<Flying>()
      for (const f of mem) for (const g of this.flyingUsers.get(f.job.projectId)?.get(f.job.userKey) ?? []) all.add(g)
      for (const f of [...all].sort((a, b) => a.job.id - b.job.id)) {
        if (named.has(f)) {
          leave(
            f,
            this.insertRow(f.job, 'pending', {
              nextAttemptAt: outcome.readyAt ?? f.job.receivedAt,
              ...(outcome.failed && {
                attempts: 1,
                firstAttemptAt: outcome.failed.now,
                lastError: outcome.failed.error
              })
            })
          )
          if (outcome.failed) tally.add(f.job.projectId, 'retrying', 1)
        } else {
          leave(f, this.stillLeasedRow(f, tally))
        }
      }
    }
    this.writeTally(tally)
    return this.afterCommit(this.writeMarks(marks), gone, movedNow)
  }

  /** What a write for flying events changes in memory, once its transaction commits. */
  private afterCommit(
    applyMarks: () => void,
    gone: Iterable<Flying>,
    movedNow: ReadonlyArray<readonly [from: number, to: number]>
  ): () => void {
    return () => {
      applyMarks()
      for (const f of gone) this.land(f)
      const at = Date.now()
      for (const [from, to] of movedNow) this.moved.set(from, { id: to, at })
    }
  }

  /**
   * Delivery bookkeeping (leases, outcomes, lease recovery) in one transaction that is not fsynced on its own:
   * a crash of the process loses none of it (the WAL is written before the call returns), and a power loss can
   * lose only the last moments of it, which is safe — the next fsynced commit (every ingest commit is one) or
   * checkpoint makes it durable, and until then the worst case is an event delivered again, never one lost.
   * Ingest keeps synchronous=FULL: an event is on disk before its 200. See docs/relay-ingest.md.
   */
  private bookkeeping<T>(fn: () => T): T {
    this.statement('PRAGMA synchronous = NORMAL').run()
    try {
      return this.guard(() => this.db.transaction(fn)())
    } finally {
      this.statement('PRAGMA synchronous = FULL').run()
    }
  }

  /**
   * Runs `fn`; when the disk refuses a write (SQLITE_FULL), the reserve is released — delivery then has room to
   * lease, settle, checkpoint and give space back — and ingest is refused until the reserve is made again.
   */
  private guard<T>(fn: () => T): T {
    try {
      return fn()
    } catch (error) {
      if ((error as { code?: string }).code === 'SQLITE_FULL' && this.reserve && !this.full) {
        this.reserve.release()
        this.full = true
        this.onSpace?.(true)
      }
      throw error
    }
  }

  /** A transaction of `fn`, run under guard(). */
  private guarded<T>(fn: () => T): () => T {
    const tx = this.db.transaction(fn)
    return () => this.guard(() => tx())
  }

  /** When spaceProblem() last looked whether the disk has room again (it is asked on every request). */
  private roomCheckedAt = 0

  /** Why ingest must wait for room on the disk, or undefined while the reserve is in place. */
  spaceProblem(): string | undefined {
    if (!this.full) return undefined
    // Room may have come back (delivery freed it, or someone did): at most one look a second.
    const now = Date.now()
    if (now - this.roomCheckedAt >= 1_000) {
      this.roomCheckedAt = now
      if (this.reserve?.rearmIfRoom()) {
        this.full = false
        this.onSpace?.(false)
        return undefined
      }
    }
    return `the disk holding the queue is full; delivery is freeing room, and ingest resumes once ${Math.round((2 * (this.reserve?.bytes ?? 0)) / 1024 ** 2)} MiB are free`
  }

  /** Events held behind `ids` (their users') become pending again: what blocked them is settled. */
  private unholdUsersOf(ids: readonly number[]): void {
    if (ids.length === 0) return
    this.statement(SqliteQueue.DELIVERY_STATEMENTS.unholdUsersOf).run(JSON.stringify(ids))
  }

  private readonly statements = new Map<string, Database.Statement>()
  private readonly shapedStatements = new Map<string, Database.Statement>()

  /**
   * Like statement(), but its rows are arrays of the columns in order (`raw`) or the first column alone (`pluck`):
   * cheaper than an object per row, for the delivery path's many rows.
   */
  private statementAs(shape: 'raw' | 'pluck', sql: string): Database.Statement {
    const key = `${shape}\u0000${sql}`
    let stmt = this.shapedStatements.get(key)
    if (!stmt) {
      stmt = shape === 'raw' ? this.db.prepare(sql).raw(true) : this.db.prepare(sql).pluck(true)
      this.shapedStatements.set(key, stmt)
    }
    return stmt
  }

  /** A prepared statement, compiled once (id lists travel as one JSON parameter, read with json_each). */
  private statement(sql: string): Database.Statement {
    let stmt = this.statements.get(sql)
    if (!stmt) {
      stmt = this.db.prepare(sql)
      this.statements.set(sql, stmt)
    }
    return stmt
  }

  private update(ids: readonly number[], sql: string, ...params: unknown[]): void {
    if (ids.length === 0) return
    this.statement(`${sql} WHERE id IN (SELECT value FROM json_each(?))`).run(...params, JSON.stringify(ids))
  }

  /**
   * The ids of `refs` their holders may still write: bare ids as they are; a lease's ids only while still leased
   * by that lease (inside the caller's transaction).
   */
  private held(refs: readonly JobRef[]): number[] {
    const { bare, leases } = splitRefs(refs)
    const ids = [...bare]
    for (const [token, { ids: leased }] of leases) ids.push(...this.stillLeased(leased, token))
    return ids
  }

  /** Those of `ids` the lease `token` still holds. */
  private stillLeased(ids: readonly number[], token: number): number[] {
    return this.statementAs(
      'pluck',
      "SELECT id FROM events WHERE id IN (SELECT value FROM json_each(?)) AND state = 'leased' AND lease_token = ?"
    ).all(JSON.stringify(ids), token) as number[]
  }

  async renew(refs: readonly JobRef[], leaseUntil: number): Promise<number[]> {
    const { table, mem, alias } = this.resolve(refs)
    const ids =
      table.length === 0
        ? []
        : this.bookkeeping(() => {
            const held = this.held(table)
            this.update(held, 'UPDATE events SET lease_until = MAX(COALESCE(lease_until, 0), ?)', leaseUntil)
            return held
          })
    for (const f of mem) f.leaseUntil = Math.max(f.leaseUntil, leaseUntil)
    return [...ids.map((id) => alias.get(id) ?? id), ...mem.map((f) => f.job.id)]
  }

  async complete(refs: readonly JobRef[]): Promise<void> {
    const after = this.bookkeeping(() => {
      const { table, mem } = this.resolve(refs)
      const { bare, leases } = splitRefs(table)
      // A lease's rows are leased by definition (held() checks it): what they count for is known without reading
      // them; bare ids are read.
      const tally = new Tally()
      for (const r of this.countedRows(bare)) tally.count(r, -1, -Number(r.bytes))
      const ids = [...bare]
      const named = new Set(bare)
      for (const [token, { projectId, ids: leased }] of leases) {
        const still = this.stillLeased(leased, token).filter((id) => !named.has(id))
        tally.add(projectId, 'undelivered', -still.length)
        tally.add(projectId, 'leased', -still.length)
        ids.push(...still)
      }
      this.unholdUsersOf(ids)
      this.update(ids, 'DELETE FROM events')
      this.writeTally(tally)
      return this.settleFlying(mem, { kind: 'complete' })
    })
    after()
  }

  async release(refs: readonly JobRef[], readyAt: number): Promise<void> {
    const after = this.bookkeeping(() => {
      const { table, mem } = this.resolve(refs)
      const ids = this.held(table)
      this.unholdUsersOf(ids)
      this.recount(ids, () =>
        this.update(
          ids,
          "UPDATE events SET state = 'pending', lease_until = NULL, lease_token = NULL, next_attempt_at = ?",
          readyAt
        )
      )
      return this.settleFlying(mem, { kind: 'pending', readyAt })
    })
    after()
  }

  async retry(refs: readonly JobRef[], nextAttemptAt: number, error: string, now: number): Promise<void> {
    const after = this.bookkeeping(() => {
      const { table, mem } = this.resolve(refs)
      const ids = this.held(table)
      this.recount(ids, () =>
        this.update(
          ids,
          "UPDATE events SET state = 'pending', lease_until = NULL, lease_token = NULL, attempts = attempts + 1, next_attempt_at = ?, last_error = ?, first_attempt_at = COALESCE(first_attempt_at, ?)",
          nextAttemptAt,
          error.slice(0, 500),
          now
        )
      )
      return this.settleFlying(mem, { kind: 'pending', readyAt: nextAttemptAt, failed: { error, now } })
    })
    after()
  }

  async deadLetter(refs: readonly JobRef[], info: DeadLetterInfo, now: number): Promise<void> {
    const after = this.guarded(() => {
      const { table, mem } = this.resolve(refs)
      const ids = this.held(table)
      this.unholdUsersOf(ids)
      this.recount(ids, () =>
        this.update(
          ids,
          "UPDATE events SET state = 'dead', lease_until = NULL, lease_token = NULL, dead_reason = ?, dead_status = ?, dead_response = ?, dead_at = ?, attempts = attempts + ?, first_attempt_at = COALESCE(first_attempt_at, ?)",
          info.reason.slice(0, 1000),
          info.status ?? null,
          info.response?.slice(0, 2000) ?? null,
          now,
          info.sent ? 1 : 0,
          info.sent ? now : null
        )
      )
      return this.settleFlying(mem, { kind: 'dead', info, now })
    })()
    after()
  }

  async recoverLeases(now: number): Promise<number> {
    // Another relay's leases are not this one's to take back (see claim).
    if (!this.claim(false)) return 0
    // Just claimed: every lease in the table is a gone process's, whatever its time says.
    const leasesEndBy = this.takeOver ? Number.MAX_SAFE_INTEGER : now
    this.takeOver = false
    // The relay calls this periodically: a good moment to look again for inbox rows, whoever wrote them (an admin
    // command's replay runs in another process).
    for (const lane of this.countInbox().keys()) this.inboxMore.add(lane)
    const forgetBefore = Date.now() - MOVED_KEPT_MS
    for (const [id, { at }] of this.moved) if (at < forgetBefore) this.moved.delete(id)
    const expiredFlying = [...this.flying.values()].filter((f) => f.leaseUntil <= leasesEndBy)
    const { recovered, after } = this.bookkeeping(() => {
      // Flying events first: those of their users still leased move to the table as leased, and are taken back
      // below if their lease is past too.
      const after = this.settleFlying(expiredFlying, { kind: 'pending' })
      const expired = (this.statement(SqliteQueue.DELIVERY_STATEMENTS.expiredLeases).all(leasesEndBy) as Row[]).map(
        (r) => Number(r.id)
      )
      this.unholdUsersOf(expired)
      this.recount(expired, () =>
        this.update(expired, "UPDATE events SET state = 'pending', lease_until = NULL, lease_token = NULL")
      )
      // Held events of a user with nothing in flight and no retry to wait for: ready again (never stranded).
      this.statement(SqliteQueue.DELIVERY_STATEMENTS.unholdFreeUsers).run(now)
      return { recovered: expired.length + expiredFlying.length, after }
    })
    after()
    return recovered
  }

  async pruneDedup(before: number): Promise<number> {
    return this.guard(() => this.statement('DELETE FROM seen WHERE seen_at < ?').run(before).changes)
  }

  async stats(now: number): Promise<QueueStats> {
    // Counters and index seeks only: the same cost with an empty queue or ten million events.
    const counters = this.statement('SELECT lane, name, value FROM counters').all() as Array<{
      lane: string
      name: string
      value: number
    }>
    const lanes: Record<string, number> = {}
    let undelivered = 0
    let leased = 0
    let retrying = 0
    let dead = 0
    let deadBytes = 0
    for (const { lane, name, value } of counters) {
      if (name === 'undelivered') {
        if (value !== 0) lanes[lane] = value
        undelivered += value
      } else if (name === 'leased') leased += value
      else if (name === 'retrying') retrying += value
      else if (name === 'dead') dead += value
      else if (name === 'dead_bytes') deadBytes += value
    }
    const oldest = Object.keys(lanes)
      .map((lane) => this.oldestWaiting(lane))
      .filter((t): t is number => t !== undefined)
    const oldestDead = this.statement("SELECT dead_at FROM events WHERE state = 'dead' ORDER BY dead_at LIMIT 1")
      .pluck()
      .get() as number | undefined
    // Events flying from the inbox are leased in this process's memory only; the counters have them as undelivered.
    leased += this.flying.size
    return {
      pending: undelivered - leased,
      leased,
      retrying,
      dead,
      oldestAgeMs: oldest.length === 0 ? 0 : Math.max(0, now - Math.min(...oldest)),
      bytes: await this.liveBytes(),
      lanes,
      deadLetters: {
        count: dead,
        bytes: deadBytes,
        oldestAgeMs: oldestDead == null ? 0 : Math.max(0, now - Number(oldestDead))
      }
    }
  }

  /**
   * When the oldest event of a lane still to be delivered arrived: one seek in each state's partial index (the
   * states are literals, or the partial indexes could not be used) and one in the inbox; events in flight are
   * read whole (at most what the lane's leases hold).
   */
  private oldestWaiting(lane: string): number | undefined {
    const times = [
      ...SqliteQueue.OLDEST_STATEMENTS,
      'SELECT received_at FROM inbox WHERE project_id = ? ORDER BY id LIMIT 1'
    ]
      .map((sql) => this.statement(sql).pluck().get(lane) as number | undefined)
      .filter((t): t is number => t != null)
    return times.length === 0 ? undefined : Math.min(...times)
  }

  /** The figures by a full scan, as stats() computed them before the counters: what the counters are tested against. */
  scanStats(now: number): Omit<QueueStats, 'bytes'> {
    const row = this.db
      .prepare(
        `SELECT
          SUM(state IN ('pending', 'held')) AS pending, SUM(state = 'leased') AS leased, SUM(state = 'dead') AS dead,
          SUM(state IN ('pending', 'held') AND attempts > 0) AS retrying,
          MIN(CASE WHEN state != 'dead' THEN received_at END) AS oldest,
          SUM(CASE WHEN state = 'dead' THEN ${DEAD_BYTES} END) AS dead_bytes,
          MIN(CASE WHEN state = 'dead' THEN dead_at END) AS oldest_dead
        FROM events`
      )
      .get() as Row
    // An inbox row's events not done yet (see InboxRow), per lane.
    const inbox: Row[] = []
    const byLane = new Map<string, Row>()
    for (const r of this.db.prepare('SELECT project_id, events, received_at, done FROM inbox').all() as Row[]) {
      const left = Number(r.events) - (r.done ? countDone(new Uint8Array(r.done as Buffer)) : 0)
      const lane = String(r.project_id)
      let sum = byLane.get(lane)
      if (sum === undefined) {
        byLane.set(lane, (sum = { project_id: lane, n: 0, oldest: r.received_at }))
        inbox.push(sum)
      }
      sum.n = Number(sum.n) + left
      sum.oldest = Math.min(Number(sum.oldest), Number(r.received_at))
    }
    const lanes: Record<string, number> = {}
    for (const r of [
      ...(this.db
        .prepare("SELECT project_id, count(*) AS n FROM events WHERE state != 'dead' GROUP BY project_id")
        .all() as Row[]),
      ...inbox
    ])
      lanes[String(r.project_id)] = (lanes[String(r.project_id)] ?? 0) + Number(r.n)
    const oldest = [row.oldest, ...inbox.map((r) => r.oldest)].filter((v) => v != null).map(Number)
    return {
      pending: Number(row.pending ?? 0) + inbox.reduce((sum, r) => sum + Number(r.n), 0) - this.flying.size,
      leased: Number(row.leased ?? 0) + this.flying.size,
      retrying: Number(row.retrying ?? 0),
      dead: Number(row.dead ?? 0),
      oldestAgeMs: oldest.length === 0 ? 0 : Math.max(0, now - Math.min(...oldest)),
      lanes,
      deadLetters: {
        count: Number(row.dead ?? 0),
        bytes: Number(row.dead_bytes ?? 0),
        oldestAgeMs: row.oldest_dead == null ? 0 : Math.max(0, now - Number(row.oldest_dead))
      }
    }
  }

  /**
   * The statements of the delivery path that find events by state, for a test that proves each reads its partial
   * index (docs/relay-queue.md, "Indexes"). Parameters are named or `?`; states are literals, or SQLite could not
   * use the partial indexes.
   */
  static readonly DELIVERY_STATEMENTS = {
    /**
     * Ready events, oldest first, each with its user's state: a seek per candidate in events_inflight, events_later
     * and events_held, all in one statement (never a walk over a blocked user's held backlog, never a call per user
     * from JavaScript). A fresh event (its attempt time is its arrival) is ready whatever the clock says now, and
     * never blocks its user: order is by arrival, even after the clock stepped back (docs/relay-queue.md).
     */
    candidates: `SELECT c.id, c.user_key AS userKey,
        EXISTS (SELECT 1 FROM events b WHERE b.project_id = @project AND b.user_key = c.user_key AND b.state = 'leased')
          OR EXISTS (SELECT 1 FROM events b WHERE b.project_id = @project AND b.user_key = c.user_key AND b.state = 'pending' AND b.next_attempt_at > b.received_at AND b.next_attempt_at > @now) AS blocked,
        EXISTS (SELECT 1 FROM events b WHERE b.project_id = @project AND b.user_key = c.user_key AND b.state = 'held') AS held
      FROM (SELECT id, user_key FROM events WHERE project_id = @project AND state = 'pending' AND (next_attempt_at <= @now OR next_attempt_at <= received_at) ORDER BY id LIMIT @limit) c`,
    /** A user's held events, ready again (their user is no longer blocked). */
    unholdUser:
      "UPDATE events SET state = 'pending' WHERE project_id = @project AND user_key = @user AND state = 'held'",
    /** The held events of the users of some events (settled or taken back), ready again. */
    unholdUsersOf:
      "UPDATE events SET state = 'pending' WHERE state = 'held' AND (project_id, user_key) IN (SELECT project_id, user_key FROM events WHERE id IN (SELECT value FROM json_each(?)))",
    /** Leases past their time (a read of the events in flight, never of the backlog). */
    expiredLeases: "SELECT id FROM events WHERE state = 'leased' AND lease_until <= ?",
    /**
     * Held events of a user with nothing in flight and no retry to wait for: ready again (never stranded). Each
     * held user is looked at once (the partial index), with one seek per state.
     */
    unholdFreeUsers: `UPDATE events SET state = 'pending' WHERE state = 'held' AND (project_id, user_key) IN (
        SELECT h.project_id, h.user_key FROM (SELECT DISTINCT project_id, user_key FROM events WHERE state = 'held') h
        WHERE NOT EXISTS (SELECT 1 FROM events b WHERE b.project_id = h.project_id AND b.user_key = h.user_key AND b.state = 'leased')
          AND NOT EXISTS (SELECT 1 FROM events b WHERE b.project_id = h.project_id AND b.user_key = h.user_key AND b.state = 'pending' AND b.next_attempt_at > b.received_at AND b.next_attempt_at > ?))`
  } as const

  /** A lease's rows, as LeasedRow arrays (ids as a JSON list, then the lease's token). */
  private static readonly LEASED_ROWS =
    "SELECT id, message_id, source_name, project_id, user_key, body, received_at, attempts, first_attempt_at FROM events WHERE id IN (SELECT value FROM json_each(?)) AND state = 'leased' AND lease_token = ?"

  /** The oldest arrival in each state a lane's events wait in (see oldestWaiting). */
  private static readonly OLDEST_STATEMENTS = [
    "SELECT received_at FROM events WHERE project_id = ? AND state = 'pending' ORDER BY id LIMIT 1",
    "SELECT received_at FROM events WHERE project_id = ? AND state = 'held' ORDER BY id LIMIT 1",
    "SELECT min(received_at) FROM events WHERE project_id = ? AND state = 'leased'"
  ]

  /** The statements stats() runs, for a test that proves each is an index seek, never a scan. */
  static readonly STATS_STATEMENTS = [
    'SELECT lane, name, value FROM counters',
    "SELECT dead_at FROM events WHERE state = 'dead' ORDER BY dead_at LIMIT 1",
    ...SqliteQueue.OLDEST_STATEMENTS.map((sql) => sql.replace('?', "'p'")),
    "SELECT received_at FROM inbox WHERE project_id = 'p' ORDER BY id LIMIT 1"
  ]

  /** EXPLAIN QUERY PLAN for a statement of this queue's (for tests). */
  queryPlan(sql: string): string {
    return (this.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as Array<{ detail: string }>)
      .map((r) => r.detail)
      .join('\n')
  }

  async liveBytes(): Promise<number> {
    // Pages in use as of the last commit (the WAL included): a delivered backlog gives its pages back at once.
    // One prepared statement (asked on every request; db.pragma() would compile two statements each time).
    const pages = this.statement(
      'SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())'
    )
      .pluck()
      .get() as number
    return pages * this.pageSize
  }

  async pruneDead(deadBefore: number, maxBytes: number): Promise<PruneResult> {
    return this.guarded(() => {
      const tally = new Tally()
      const gone = this.statement(
        `DELETE FROM events WHERE state = 'dead' AND dead_at < ? RETURNING ${DEAD_BYTES} AS bytes`
      ).all(deadBefore) as Array<{ bytes: number }>
      const expired = gone.length
      for (const r of gone) tally.count({ state: 'dead' }, -1, -Number(r.bytes))
      const bytes =
        Number(
          this.statement("SELECT value FROM counters WHERE lane = '' AND name = 'dead_bytes'").pluck().get() ?? 0
        ) - gone.reduce((n, r) => n + Number(r.bytes), 0)
      let excess = bytes - maxBytes
      let overSize = 0
      const oldest = this.statement(
        `SELECT id, ${DEAD_BYTES} AS bytes FROM events WHERE state = 'dead' ORDER BY dead_at, id LIMIT 1000`
      )
      while (excess > 0) {
        const rows = oldest.all() as Array<{ id: number; bytes: number }>
        if (rows.length === 0) break
        const oldestIds: number[] = []
        for (const r of rows) {
          if (excess <= 0) break
          oldestIds.push(r.id)
          excess -= r.bytes
          tally.count({ state: 'dead' }, -1, -Number(r.bytes))
        }
        this.update(oldestIds, 'DELETE FROM events')
        overSize += oldestIds.length
      }
      this.writeTally(tally)
      return { expired, overSize }
    })()
  }

  async compact(): Promise<void> {
    if (this.path === ':memory:') return
    // Checkpoint first: it needs no new space, and on a full disk it is what gives some back (the WAL file is
    // cut to zero). Then hand free pages of the database file back in small steps, each checkpointed at once:
    // a step's moved pages pass through the WAL, so on a nearly full disk one large step could not fit, while
    // small ones each give room back before the next.
    this.guard(() => this.db.pragma('wal_checkpoint(TRUNCATE)'))
    for (let moved = 0; moved < VACUUM_PAGES_PER_CALL;) {
      if (Number(this.db.pragma('freelist_count', { simple: true })) < VACUUM_MIN_FREE_PAGES) break
      const step = Math.min(VACUUM_STEP_PAGES, Math.floor(this.freeDiskBytes() / this.pageSize / 4))
      if (step < VACUUM_MIN_STEP_PAGES) break
      this.guard(() => {
        this.db.pragma(`incremental_vacuum(${step})`)
        this.db.pragma('wal_checkpoint(TRUNCATE)')
      })
      moved += step
    }
    if (this.full && this.reserve?.rearmIfRoom()) {
      this.full = false
      this.onSpace?.(false)
    }
  }

  /** Room left on the queue's disk, in bytes (what a vacuum step may use). */
  private freeDiskBytes(): number {
    try {
      const fs = statfsSync(dirname(this.path))
      return fs.bavail * fs.bsize
    } catch {
      return VACUUM_STEP_PAGES * this.pageSize * 4
    }
  }

  async listDead(options: ListDeadOptions = {}): Promise<DeadLetter[]> {
    const rows = this.db
      .prepare(
        `SELECT * FROM events WHERE state = 'dead' AND id > @after ${options.sourceName ? 'AND source_name = @source' : ''} ORDER BY id LIMIT @limit`
      )
      .all({ source: options.sourceName, limit: options.limit ?? 100, after: options.afterId ?? 0 }) as Row[]
    return rows.map(rowToDeadLetter)
  }

  /** The ids of the dead letters a selection names. */
  private deadIds(selection: Selection): number[] {
    if (selection === 'all')
      return this.statement("SELECT id FROM events WHERE state = 'dead'").pluck().all() as number[]
    if (selection.length === 0) return []
    return this.statement("SELECT id FROM events WHERE state = 'dead' AND id IN (SELECT value FROM json_each(?))")
      .pluck()
      .all(JSON.stringify(selection)) as number[]
  }

  async replayDead(selection: Selection, now: number): Promise<number> {
    const inboxed = new Map<string, number>()
    const replayed = this.guarded(() => {
      const ids = this.deadIds(selection)
      if (ids.length === 0) return 0
      // A replayed event re-enters the queue as ingest's events do, through the inbox, received now: each lane's
      // events then stand in the order they arrived, which is what the oldest-age gauge reads with index seeks.
      const rows = this.statement(
        'SELECT message_id, source_name, project_id, user_key, body FROM events WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id'
      ).all(JSON.stringify(ids)) as Row[]
      const lanes = new Map<string, InboxEvent[]>()
      for (const r of rows) {
        const lane = String(r.project_id)
        let list = lanes.get(lane)
        if (!list) lanes.set(lane, (list = []))
        list.push([String(r.message_id), String(r.source_name), String(r.user_key), String(r.body), now])
      }
      const tally = new Tally()
      for (const [lane, list] of lanes) {
        this.writeInbox(lane, list)
        tally.add(lane, 'undelivered', list.length)
        inboxed.set(lane, list.length)
      }
      this.remove(ids)
      this.writeTally(tally)
      return ids.length
    })()
    for (const lane of inboxed.keys()) this.inboxMore.add(lane)
    return replayed
  }

  async purgeDead(selection: Selection): Promise<number> {
    return this.guarded(() => {
      const ids = this.deadIds(selection)
      this.remove(ids)
      return ids.length
    })()
  }

  async checkWritable(): Promise<void> {
    // A real write, committed: BEGIN IMMEDIATE alone succeeds on a full disk.
    const write = () => this.guard(() => this.statement('UPDATE probe SET at = ? WHERE id = 1').run(Date.now()))
    try {
      write()
    } catch (error) {
      if ((error as { code?: string }).code !== 'SQLITE_FULL') throw error
      // The WAL may hold the space the disk lacks: checkpoint and truncate it, then try once more.
      this.db.pragma('wal_checkpoint(TRUNCATE)')
      write()
    }
  }

  async close(): Promise<void> {
    await this.commits.flush()
    this.db.close()
    // The next relay on this file may claim it at once.
    this.ownerLock?.close()
    this.ownerLock = undefined
  }
}
