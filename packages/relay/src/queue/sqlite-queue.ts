import { mkdirSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import { dedupKey, GroupCommit, rowToDeadLetter, rowToJob, type DeadLetter, type DeadLetterInfo, type EnqueueResult, type Job, type EventRow, type NewEvent, type Queue, type QueueStats, type Selection } from './queue'

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
  first_attempt_at INTEGER,
  last_error TEXT,
  dead_reason TEXT,
  dead_status INTEGER,
  dead_response TEXT,
  dead_at INTEGER
);
CREATE INDEX IF NOT EXISTS events_ready ON events (project_id, state, id);
CREATE INDEX IF NOT EXISTS events_user ON events (project_id, user_key, state, next_attempt_at);
CREATE TABLE IF NOT EXISTS seen (message_id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen (seen_at);
`

// Ready events of users with nothing in flight and nothing waiting for a retry, oldest first.
const LEASE_CANDIDATES = `
SELECT e.id FROM events e
WHERE e.project_id = @project AND e.state = 'pending' AND e.next_attempt_at <= @now
  AND NOT EXISTS (SELECT 1 FROM events b WHERE b.project_id = e.project_id AND b.user_key = e.user_key AND b.state = 'leased')
  AND NOT EXISTS (
    SELECT 1 FROM events b
    WHERE b.project_id = e.project_id AND b.user_key = e.user_key AND b.state = 'pending' AND b.next_attempt_at > @now
  )
ORDER BY e.id LIMIT @limit`

export interface SqliteQueueOptions {
  /** Group commit: write at most this long after the first waiting event (default 2 ms). */
  readonly commitWindowMs?: number
  /** Group commit: write at once when this many events wait (default 4,096). */
  readonly commitMaxEvents?: number
}

type Row = EventRow

/** A write failed because of a value (binding, constraint, size), not because the database is unwell. */
function causedByData(error: unknown): boolean {
  const code = String((error as { code?: unknown }).code ?? '')
  if (/^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|CORRUPT|READONLY|NOTADB|NOMEM|PROTOCOL|INTERRUPT|PERM|AUTH)/.test(code)) return false
  return code.startsWith('SQLITE_') || error instanceof TypeError || error instanceof RangeError
}

/**
 * The default queue: one SQLite file in WAL mode with synchronous=FULL, so a commit survives a crash or a
 * power loss. Ingest is group-committed (many requests, one fsync), which keeps FULL close to NORMAL's speed.
 * One relay process per file (SQLite has one writer); use PostgreSQL to run several.
 */
export class SqliteQueue implements Queue {
  private readonly db: Database.Database
  private readonly commits: GroupCommit

  constructor(
    readonly path: string,
    options: SqliteQueueOptions = {}
  ) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    this.db = new Database(path)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = FULL')
    this.db.pragma('busy_timeout = 5000')
    this.db.exec(SCHEMA)
    const insertSeen = this.db.prepare('INSERT OR IGNORE INTO seen (message_id, seen_at) VALUES (?, ?)')
    const insertEvent = this.db.prepare(
      'INSERT INTO events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)'
    )
    const insertDead = this.db.prepare(
      "INSERT INTO events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state, dead_reason, dead_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'dead', ?, ?)"
    )
    const writeAll = this.db.transaction((requests: ReadonlyArray<readonly NewEvent[]>) =>
      requests.map((events) => {
        let accepted = 0
        let dead = 0
        for (const e of events) {
          if (e.deadReason !== undefined) {
            insertDead.run(e.messageId, e.sourceName, e.projectId, e.userKey, e.body, e.receivedAt, e.receivedAt, e.deadReason.slice(0, 1000), e.receivedAt)
            dead++
            continue
          }
          if (insertSeen.run(dedupKey(e), e.dedupFrom ?? e.receivedAt).changes === 0) continue
          insertEvent.run(e.messageId, e.sourceName, e.projectId, e.userKey, e.body, e.receivedAt, e.receivedAt)
          accepted++
        }
        return { accepted, duplicates: events.length - accepted - dead }
      })
    )
    this.commits = new GroupCommit(writeAll, options.commitWindowMs ?? 2, options.commitMaxEvents ?? 4096, causedByData)
  }

  enqueue(events: readonly NewEvent[]): Promise<EnqueueResult> {
    return this.commits.add(events)
  }

  async lease(projectId: string, limit: number, leaseMs: number, now: number): Promise<Job[]> {
    const take = this.db.transaction(() => {
      const ids = (this.statement(LEASE_CANDIDATES).all({ project: projectId, now, limit }) as Row[]).map((r) => r.id as number)
      if (ids.length === 0) return []
      const leased = this.statement("UPDATE events SET state = 'leased', lease_until = ? WHERE id IN (SELECT value FROM json_each(?)) RETURNING *").all(now + leaseMs, JSON.stringify(ids)) as Row[]
      return leased.sort((a, b) => Number(a.id) - Number(b.id))
    })
    return take().map(rowToJob)
  }

  private readonly statements = new Map<string, Database.Statement>()

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

  async complete(ids: readonly number[]): Promise<void> {
    this.update(ids, 'DELETE FROM events')
  }

  async release(ids: readonly number[], readyAt: number): Promise<void> {
    this.update(ids, "UPDATE events SET state = 'pending', lease_until = NULL, next_attempt_at = ?", readyAt)
  }

  async retry(ids: readonly number[], nextAttemptAt: number, error: string, now: number): Promise<void> {
    this.update(
      ids,
      "UPDATE events SET state = 'pending', lease_until = NULL, attempts = attempts + 1, next_attempt_at = ?, last_error = ?, first_attempt_at = COALESCE(first_attempt_at, ?)",
      nextAttemptAt,
      error.slice(0, 500),
      now
    )
  }

  async deadLetter(ids: readonly number[], info: DeadLetterInfo, now: number): Promise<void> {
    this.update(
      ids,
      "UPDATE events SET state = 'dead', lease_until = NULL, dead_reason = ?, dead_status = ?, dead_response = ?, dead_at = ?",
      info.reason.slice(0, 1000),
      info.status ?? null,
      info.response?.slice(0, 2000) ?? null,
      now
    )
  }

  async recoverLeases(now: number): Promise<number> {
    return this.db.prepare("UPDATE events SET state = 'pending', lease_until = NULL WHERE state = 'leased' AND lease_until <= ?").run(now).changes
  }

  async pruneDedup(before: number): Promise<number> {
    return this.db.prepare('DELETE FROM seen WHERE seen_at < ?').run(before).changes
  }

  async stats(now: number): Promise<QueueStats> {
    const row = this.db
      .prepare(
        `SELECT
          SUM(state = 'pending') AS pending, SUM(state = 'leased') AS leased, SUM(state = 'dead') AS dead,
          SUM(state = 'pending' AND next_attempt_at > @now) AS retrying,
          MIN(CASE WHEN state != 'dead' THEN received_at END) AS oldest
        FROM events`
      )
      .get({ now }) as Row
    return {
      pending: Number(row.pending ?? 0),
      leased: Number(row.leased ?? 0),
      retrying: Number(row.retrying ?? 0),
      dead: Number(row.dead ?? 0),
      oldestAgeMs: row.oldest == null ? 0 : Math.max(0, now - Number(row.oldest)),
      bytes: await this.sizeBytes()
    }
  }

  async sizeBytes(): Promise<number> {
    if (this.path === ':memory:') return 0
    const fileSize = (p: string) => {
      try {
        return statSync(p).size
      } catch {
        return 0
      }
    }
    return fileSize(this.path) + fileSize(`${this.path}-wal`)
  }

  async listDead(options: { limit?: number; sourceName?: string } = {}): Promise<DeadLetter[]> {
    const rows = this.db
      .prepare(`SELECT * FROM events WHERE state = 'dead' ${options.sourceName ? 'AND source_name = @source' : ''} ORDER BY id LIMIT @limit`)
      .all({ source: options.sourceName, limit: options.limit ?? 100 }) as Row[]
    return rows.map(rowToDeadLetter)
  }

  async replayDead(selection: Selection, now: number): Promise<number> {
    const set =
      "SET state = 'pending', attempts = 0, first_attempt_at = NULL, next_attempt_at = @now, last_error = NULL, dead_reason = NULL, dead_status = NULL, dead_response = NULL, dead_at = NULL"
    if (selection === 'all') return this.db.prepare(`UPDATE events ${set} WHERE state = 'dead'`).run({ now }).changes
    if (selection.length === 0) return 0
    return this.db.prepare(`UPDATE events ${set} WHERE state = 'dead' AND id IN (SELECT value FROM json_each(@ids))`).run({ now, ids: JSON.stringify(selection) }).changes
  }

  async purgeDead(selection: Selection): Promise<number> {
    if (selection === 'all') return this.db.prepare("DELETE FROM events WHERE state = 'dead'").run().changes
    if (selection.length === 0) return 0
    return this.db.prepare("DELETE FROM events WHERE state = 'dead' AND id IN (SELECT value FROM json_each(?))").run(JSON.stringify(selection)).changes
  }

  async checkWritable(): Promise<void> {
    this.db.exec('BEGIN IMMEDIATE; ROLLBACK')
  }

  async close(): Promise<void> {
    await this.commits.flush()
    this.db.close()
  }
}
