import { mkdirSync, statfsSync } from 'node:fs'
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
  type UserState
} from './queue'
import { DiskReserve } from './disk-reserve'

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
CREATE TABLE IF NOT EXISTS seen (message_id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen (seen_at);
CREATE TABLE IF NOT EXISTS inbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  project_id TEXT NOT NULL,
  events INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_lane ON inbox (project_id, id);
CREATE TABLE IF NOT EXISTS counters (lane TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (lane, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);
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
/** Events in one inbox row at most (a batch request holds up to 2,500). */
const INBOX_ROW_EVENTS = 500
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

/** An accepted event in an inbox row: messageId, sourceName, userKey, body (Segment JSON), receivedAt. */
type InboxEvent = [string, string, string, string, number]

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
 * and writes each request's accepted events as one inbox row, split into per-event rows by the next lease.
 * One relay process per file (SQLite has one writer); use PostgreSQL to run several.
 */
export class SqliteQueue implements Queue {
  private readonly db: Database.Database
  private readonly commits: GroupCommit
  private readonly pageSize: number
  /** Moves up to about `maxEvents` of one lane's events from the inbox into per-event rows (inside a transaction). */
  private readonly splitRows: (lane: string, maxEvents: number) => number
  /** Events in the inbox per lane, not yet split (counted here so a lease with nothing to split costs no query). */
  private inboxEvents = new Map<string, number>()
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
    // Ingest writes a request's accepted events as one inbox row (per lane), after the dedup check; lease() moves
    // them into per-event rows in bulk, off the request path (split). See docs/relay-ingest.md.
    const insertInbox = this.db.prepare('INSERT INTO inbox (project_id, events, received_at, body) VALUES (?, ?, ?, ?)')
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
        // At most INBOX_ROW_EVENTS to a row, so a split (and its JSON) stays small whatever one call enqueues.
        for (const [projectId, lane] of lanes) {
          for (let at = 0; at < lane.length; at += INBOX_ROW_EVENTS) {
            const part = lane.slice(at, at + INBOX_ROW_EVENTS)
            insertInbox.run(projectId, part.length, Math.min(...part.map((e) => e[4])), JSON.stringify(part))
          }
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
      for (const [lane, n] of inboxed) this.inboxEvents.set(lane, (this.inboxEvents.get(lane) ?? 0) + n)
      return results
    }
    // Each lane splits its own inbox rows: a backlog on one lane (1Flow down) never delays another (survey
    // responses to Segment).
    const inboxRows = this.db.prepare(
      'SELECT id, project_id, events, body FROM inbox WHERE project_id = ? ORDER BY id LIMIT ?'
    )
    const deleteInbox = this.db.prepare('DELETE FROM inbox WHERE id = ?')
    // An inbox row's events are InboxEvent arrays: [messageId, sourceName, userKey, body, receivedAt].
    const splitRow = this.db.prepare(
      `INSERT INTO events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at)
       SELECT value ->> 0, value ->> 1, ?, value ->> 2, value ->> 3, value ->> 4, value ->> 4 FROM json_each(?) ORDER BY key`
    )
    this.splitRows = (laneId: string, maxEvents: number) => {
      let moved = 0
      while (moved < maxEvents) {
        const rows = inboxRows.all(laneId, 16) as Array<{
          id: number
          project_id: string
          events: number
          body: string
        }>
        if (rows.length === 0) break
        for (const row of rows) {
          // One statement per inbox row: its events in the order they were sent (json_each keeps array order).
          splitRow.run(row.project_id, row.body)
          deleteInbox.run(row.id)
          moved += row.events
          if (moved >= maxEvents) break
        }
      }
      return moved
    }
    this.inboxEvents = this.countInbox()
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

  async lease(projectId: string, limit: number, leaseMs: number, now: number): Promise<Job[]> {
    const take = () => {
      const candidates = this.statement(SqliteQueue.DELIVERY_STATEMENTS.candidates)
      const unhold = this.statement(SqliteQueue.DELIVERY_STATEMENTS.unholdUser)
      for (let round = 0; round < LEASE_ROUNDS; round++) {
        const found = candidates.all({ project: projectId, now, limit }) as Array<
          Candidate & { blocked: number; held: number }
        >
        if (found.length === 0) return []
        const states = new Map(found.map((c) => [c.userKey, { blocked: c.blocked === 1, held: c.held === 1 }]))
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
              return {
                id,
                messageId,
                sourceName,
                projectId: lane,
                userKey,
                body,
                receivedAt,
                attempts,
                firstAttemptAt,
                lease: token
              }
            }
          )
          this.writeTally(tally)
          return jobs.sort((a, b) => a.id - b.id)
        }
      }
      return []
    }
    // What ingest has put in the inbox becomes per-event rows first, oldest request first: as many as one lease
    // takes, and more while this lane finds none (the inbox is shared by every lane). Small splits keep each
    // lease short. A split is its own transaction: on a full disk it is skipped (the events wait, safe, in the
    // inbox) and the lease goes on with what is already split, as it did before there was an inbox.
    let diskFull = false
    const inbox = () => this.inboxEvents.get(projectId) ?? 0
    for (let attempt = 0; attempt < LEASE_ROUNDS; attempt++) {
      if (inbox() > 0 && !diskFull) {
        try {
          const moved = this.bookkeeping(() => this.splitRows(projectId, limit))
          this.inboxEvents.set(projectId, inbox() - moved)
        } catch (error) {
          if ((error as { code?: string }).code !== 'SQLITE_FULL') throw error
          diskFull = true
        }
      }
      const rows = this.bookkeeping(take)
      if (rows.length > 0 || diskFull || inbox() <= 0) return rows
    }
    return []
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
    return this.bookkeeping(() => {
      const ids = this.held(refs)
      this.update(ids, 'UPDATE events SET lease_until = MAX(COALESCE(lease_until, 0), ?)', leaseUntil)
      return ids
    })
  }

  async complete(refs: readonly JobRef[]): Promise<void> {
    this.bookkeeping(() => {
      const { bare, leases } = splitRefs(refs)
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
    })
  }

  async release(refs: readonly JobRef[], readyAt: number): Promise<void> {
    this.bookkeeping(() => {
      const ids = this.held(refs)
      this.unholdUsersOf(ids)
      this.recount(ids, () =>
        this.update(
          ids,
          "UPDATE events SET state = 'pending', lease_until = NULL, lease_token = NULL, next_attempt_at = ?",
          readyAt
        )
      )
    })
  }

  async retry(refs: readonly JobRef[], nextAttemptAt: number, error: string, now: number): Promise<void> {
    this.bookkeeping(() => {
      const ids = this.held(refs)
      this.recount(ids, () =>
        this.update(
          ids,
          "UPDATE events SET state = 'pending', lease_until = NULL, lease_token = NULL, attempts = attempts + 1, next_attempt_at = ?, last_error = ?, first_attempt_at = COALESCE(first_attempt_at, ?)",
          nextAttemptAt,
          error.slice(0, 500),
          now
        )
      )
    })
  }

  async deadLetter(refs: readonly JobRef[], info: DeadLetterInfo, now: number): Promise<void> {
    this.guarded(() => {
      const ids = this.held(refs)
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
    })()
  }

  async recoverLeases(now: number): Promise<number> {
    // The relay calls this periodically: a good moment to re-read the inbox counts, whatever may have moved them.
    this.inboxEvents = this.countInbox()
    return this.bookkeeping(() => {
      const expired = (this.statement(SqliteQueue.DELIVERY_STATEMENTS.expiredLeases).all(now) as Row[]).map((r) =>
        Number(r.id)
      )
      this.unholdUsersOf(expired)
      this.recount(expired, () =>
        this.update(expired, "UPDATE events SET state = 'pending', lease_until = NULL, lease_token = NULL")
      )
      // Held events of a user with nothing in flight and no retry to wait for: ready again (never stranded).
      this.statement(SqliteQueue.DELIVERY_STATEMENTS.unholdFreeUsers).run(now)
      return expired.length
    })
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
    const inbox = this.db
      .prepare('SELECT project_id, sum(events) AS n, min(received_at) AS oldest FROM inbox GROUP BY project_id')
      .all() as Row[]
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
      pending: Number(row.pending ?? 0) + inbox.reduce((sum, r) => sum + Number(r.n), 0),
      leased: Number(row.leased ?? 0),
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
        for (let at = 0; at < list.length; at += INBOX_ROW_EVENTS) {
          const part = list.slice(at, at + INBOX_ROW_EVENTS)
          this.statement('INSERT INTO inbox (project_id, events, received_at, body) VALUES (?, ?, ?, ?)').run(
            lane,
            part.length,
            now,
            JSON.stringify(part)
          )
        }
        tally.add(lane, 'undelivered', list.length)
        inboxed.set(lane, list.length)
      }
      this.remove(ids)
      this.writeTally(tally)
      return ids.length
    })()
    for (const [lane, n] of inboxed) this.inboxEvents.set(lane, (this.inboxEvents.get(lane) ?? 0) + n)
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
  }
}
