import { createHash } from 'node:crypto'
import pg from 'pg'
import { AdaptiveLimit, type Clock, type SendLimiter } from '../rate-limiter'
import { MAX_RETRY_AFTER_MS } from '@oneflow-seg/core'
import {
  dedupKey,
  GroupCommit,
  LEASE_ROUNDS,
  rowToDeadLetter,
  rowToJob,
  sortCandidates,
  type Candidate,
  type DeadLetter,
  type DeadLetterInfo,
  type EnqueueResult,
  type EventRow,
  newLeaseToken,
  splitRefs,
  type Job,
  type JobRef,
  type ListDeadOptions,
  type NewEvent,
  type PruneResult,
  type Queue,
  type QueueStats,
  type Selection,
  type UserState,
  orderingKey
} from './queue'
import { INBOX_ROW_EVENTS, type InboxEvent, packInbox, wellFormed } from './inbox'
import { COMMIT_SENT, PgLaneOwners, type TableRow } from './pg-inbox'
import { BucketsSettingError, DEFAULT_BUCKETS, laneOf, lanesOf, MAX_BUCKETS, projectOf } from './buckets'

const SCHEMA_VERSION = 12
const MIGRATION_LOCK = 727_001
/** Taken shared by every ingest commit and exclusively by a rotation of the dedup generations. */
const SEEN_LOCK = 727_002
/** The dedup generations' tables, by slot. */
const SEEN_TABLES = ['relay_seen_g0', 'relay_seen_g1'] as const
/** The default dedup window (limits.dedupWindowHours' default). */
const DEFAULT_DEDUP_WINDOW_MS = 24 * 3_600_000

// The database's own clock in ms: every relay instance reads the same one for the shared rate limit.
const DB_NOW = '(extract(epoch from clock_timestamp()) * 1000)::bigint'

/**
 * Rows that may block their user's later events: in flight, or pending with a later attempt time than their arrival
 * (a retry, a release behind a pause, a replay). Schema 7's partial index relay_events_busy held exactly these;
 * schema 8 splits it in two (relay_events_inflight, relay_events_later), so that leasing a fresh event adds one
 * index entry fewer.
 */
const BUSY = "(state = 'leased' OR (state = 'pending' AND next_attempt_at > received_at))"

/**
 * Whether user `u.user_key` of lane `$1` has an event in flight or waiting for a later attempt at `$2`: one seek
 * each on relay_events_inflight and relay_events_later, finding only rows that block now. A fresh event (its attempt
 * time is its arrival) never blocks: it is a candidate itself, ready whatever the leasing relay's clock says (READY).
 */
const USER_BLOCKED = `(EXISTS (SELECT 1 FROM relay_events b WHERE b.project_id = $1 AND b.user_key = u.user_key AND b.state = 'leased')
  OR EXISTS (SELECT 1 FROM relay_events b WHERE b.project_id = $1 AND b.user_key = u.user_key AND b.state = 'pending'
             AND b.next_attempt_at > $2 AND b.next_attempt_at > b.received_at))`

/**
 * A pending event that may be leased at `$2`: its attempt time has come, or it is fresh (stamped by a relay whose
 * clock runs ahead of this one's, it is still ready: order is by arrival, not by clocks).
 */
const READY = '(next_attempt_at <= $2 OR next_attempt_at <= received_at)'

/** The dedup hash of a text key in SQL: the first 16 bytes of its SHA-256 (seenHash computes the same). */
const SQL_SEEN_HASH = (key: string) => `substring(sha256(convert_to(${key}, 'UTF8')) FROM 1 FOR 16)`

/** How far ahead of the database's clock a relay's clock is believed for dedup generations (ms). */
const CLOCK_AHEAD_TOLERANCE_MS = 60_000
/** relay_seen's old rows are deleted this many at a time, for at most this long per prune. */
const PRUNE_BATCH = 10_000
const PRUNE_BUDGET_MS = 20_000

/** A dead letter's size: its event and the service's answer, in bytes. */
const DEAD_BYTES = 'octet_length(body) + coalesce(octet_length(dead_response), 0)'

/** Adds the rows of `changed` (relay_events rows with a `sign` of 1 or -1) to this connection's counters. */
const countChange = (changed: string) => `
  INSERT INTO relay_counts AS c (project_id, state, retrying, shard, n, bytes)
  SELECT project_id, state, attempts > 0, pg_backend_pid(), sum(sign),
         sum(CASE WHEN state = 'dead' THEN sign * (${DEAD_BYTES}) ELSE 0 END)
  FROM (${changed}) d
  GROUP BY project_id, state, attempts > 0
  HAVING sum(sign) <> 0 OR sum(CASE WHEN state = 'dead' THEN sign * (${DEAD_BYTES}) ELSE 0 END) <> 0
  ORDER BY 1, 2, 3
  ON CONFLICT (project_id, state, retrying, shard) DO UPDATE SET n = c.n + excluded.n, bytes = c.bytes + excluded.bytes`

/** Adds the changes `changed` (rows of project_id and n: events not done yet) to this connection's pending count. */
const countInbox = (changed: string) => `
  INSERT INTO relay_counts AS c (project_id, state, retrying, shard, n, bytes)
  SELECT project_id, 'pending', false, pg_backend_pid(), sum(n), 0 FROM (${changed}) d
  GROUP BY project_id HAVING sum(n) <> 0 ORDER BY 1
  ON CONFLICT (project_id, state, retrying, shard) DO UPDATE SET n = c.n + excluded.n`

/** The counters counted again from both tables (after a TRUNCATE of either). */
const RECOUNT = `
  DELETE FROM relay_counts;
  INSERT INTO relay_counts (project_id, state, retrying, shard, n, bytes)
  SELECT project_id, state, attempts > 0, 0, count(*), coalesce(sum(CASE WHEN state = 'dead' THEN ${DEAD_BYTES} ELSE 0 END), 0)
  FROM relay_events GROUP BY 1, 2, 3;
  ${countInbox('SELECT project_id, left_events AS n FROM relay_inbox').replace('pg_backend_pid()', '0')}`

/** Statement-level triggers `<name>_insert/_update/_delete` on `table`, each calling `fn` with its transition tables. */
const countingTriggers = (name: string, table: string, fn: string) => `
    DROP TRIGGER IF EXISTS ${name}_insert ON ${table};
    DROP TRIGGER IF EXISTS ${name}_update ON ${table};
    DROP TRIGGER IF EXISTS ${name}_delete ON ${table};
    CREATE TRIGGER ${name}_insert AFTER INSERT ON ${table} REFERENCING NEW TABLE AS new_rows
      FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();
    CREATE TRIGGER ${name}_update AFTER UPDATE ON ${table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
      FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();
    CREATE TRIGGER ${name}_delete AFTER DELETE ON ${table} REFERENCING OLD TABLE AS old_rows
      FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();`

const MIGRATIONS: Record<number, string> = {
  1: `
    CREATE TABLE IF NOT EXISTS relay_events (
      id BIGSERIAL PRIMARY KEY,
      message_id TEXT NOT NULL,
      source_name TEXT NOT NULL,
      project_id TEXT NOT NULL,
      user_key TEXT NOT NULL,
      body TEXT NOT NULL,
      received_at BIGINT NOT NULL,
      state TEXT NOT NULL DEFAULT 'pending',
      attempts INTEGER NOT NULL DEFAULT 0,
      next_attempt_at BIGINT NOT NULL,
      lease_until BIGINT,
      first_attempt_at BIGINT,
      last_error TEXT,
      dead_reason TEXT,
      dead_status INTEGER,
      dead_response TEXT,
      dead_at BIGINT
    );
    CREATE INDEX IF NOT EXISTS relay_events_ready ON relay_events (project_id, state, id);
    CREATE INDEX IF NOT EXISTS relay_events_user ON relay_events (project_id, user_key, state, next_attempt_at);
    CREATE TABLE IF NOT EXISTS relay_seen (message_key TEXT PRIMARY KEY, seen_at BIGINT NOT NULL);
    CREATE INDEX IF NOT EXISTS relay_seen_at ON relay_seen (seen_at);
    CREATE TABLE IF NOT EXISTS relay_sends (id BIGSERIAL PRIMARY KEY, project_id TEXT NOT NULL, started_at BIGINT NOT NULL, ended_at BIGINT);
    CREATE INDEX IF NOT EXISTS relay_sends_project ON relay_sends (project_id, started_at);
  `,
  // Dead letters expire oldest first; only dead rows are in this index.
  2: `CREATE INDEX IF NOT EXISTS relay_events_dead ON relay_events (dead_at) WHERE state = 'dead';`,
  // Leases carry a token that every write of their holder checks (docs/relay-queue.md); expired leases and held
  // events are found through small partial indexes, never a scan of the table.
  3: `
    ALTER TABLE relay_events ADD COLUMN IF NOT EXISTS lease_token BIGINT;
    CREATE INDEX IF NOT EXISTS relay_events_leased ON relay_events (lease_until) WHERE state = 'leased';
    CREATE INDEX IF NOT EXISTS relay_events_held ON relay_events (project_id, user_key) WHERE state = 'held';
  `,
  // The figures as counters (docs/relay-queue.md): every statement that adds, moves or removes events adds its
  // net change per (lane, state, retrying) to rows of its own connection (shard = backend pid), so no two
  // transactions ever wait on one counter row and none can deadlock on them. stats() sums a few dozen rows
  // instead of scanning the table; the rows of connections that have gone are folded into shard 0 now and then.
  // Creating the triggers locks out writers until this migration commits, so the first count is exact.
  4: `
    CREATE TABLE IF NOT EXISTS relay_counts (
      project_id TEXT NOT NULL, state TEXT NOT NULL, retrying BOOLEAN NOT NULL, shard INTEGER NOT NULL,
      n BIGINT NOT NULL, bytes BIGINT NOT NULL,
      PRIMARY KEY (project_id, state, retrying, shard)
    );
    CREATE OR REPLACE FUNCTION relay_count_events() RETURNS trigger LANGUAGE plpgsql AS $count$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        ${countChange('SELECT *, 1 AS sign FROM new_rows')};
      ELSIF TG_OP = 'DELETE' THEN
        ${countChange('SELECT *, -1 AS sign FROM old_rows')};
      ELSE
        ${countChange('SELECT *, 1 AS sign FROM new_rows UNION ALL SELECT *, -1 FROM old_rows')};
      END IF;
      RETURN NULL;
    END
    $count$;
    ${countingTriggers('relay_count', 'relay_events', 'relay_count_events')}
    CREATE OR REPLACE FUNCTION relay_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $truncate$
    BEGIN
      DELETE FROM relay_counts;
      RETURN NULL;
    END
    $truncate$;
    DROP TRIGGER IF EXISTS relay_count_truncate ON relay_events;
    CREATE TRIGGER relay_count_truncate AFTER TRUNCATE ON relay_events
      FOR EACH STATEMENT EXECUTE FUNCTION relay_count_truncate();
    DELETE FROM relay_counts;
    INSERT INTO relay_counts (project_id, state, retrying, shard, n, bytes)
    SELECT project_id, state, attempts > 0, 0, count(*), coalesce(sum(CASE WHEN state = 'dead' THEN ${DEAD_BYTES} ELSE 0 END), 0)
    FROM relay_events GROUP BY 1, 2, 3;
  `,
  // The shared rate limit grants several send slots in one row and one statement (PgSendLimiter): a row counts
  // n sends from started_at until a second after ended_at (or, never ended, after started_at + the in-flight
  // bound). The lane's advisory lock orders grants across relays; the clock is read once it is held.
  5: `
    ALTER TABLE relay_sends ADD COLUMN IF NOT EXISTS n INTEGER NOT NULL DEFAULT 1;
    CREATE OR REPLACE FUNCTION relay_take_sends(lane TEXT, lane_lock INTEGER, wanted INTEGER, max_sends INTEGER, in_flight_ms BIGINT)
    RETURNS TABLE (id BIGINT, granted INTEGER, wait_ms BIGINT) LANGUAGE plpgsql AS $take$
    DECLARE
      now_ms BIGINT;
      used BIGINT;
      soonest BIGINT;
      grant_id BIGINT;
    BEGIN
      PERFORM pg_advisory_xact_lock(lane_lock);
      now_ms := ${DB_NOW};
      DELETE FROM relay_sends s WHERE s.project_id = lane AND coalesce(s.ended_at, s.started_at + in_flight_ms) < now_ms - 1000;
      SELECT coalesce(sum(s.n), 0), min(coalesce(s.ended_at, s.started_at + in_flight_ms)) INTO used, soonest
      FROM relay_sends s WHERE s.project_id = lane;
      IF least(wanted, max_sends - used) > 0 THEN
        INSERT INTO relay_sends (project_id, started_at, n) VALUES (lane, now_ms, least(wanted, max_sends - used))
        RETURNING relay_sends.id INTO grant_id;
        RETURN QUERY SELECT grant_id, least(wanted, max_sends - used)::int, 0::bigint;
      ELSE
        RETURN QUERY SELECT NULL::bigint, 0, coalesce(soonest + 1000 - now_ms + 1, 10);
      END IF;
    END
    $take$;
  `,
  // Dedup keys as 16-byte hashes in two generations, each a table holding the keys first seen in its time range
  // [from_ms, to_ms); a generation is forgotten whole by TRUNCATE, never by row deletes (docs/relay-queue.md).
  // relay_seen keeps the keys whose window starts later than their arrival (webhooks) and the keys seen before
  // this schema; commits still look there, and its rows age out. A key written to relay_seen by anyone — a relay of
  // an older version during an upgrade included — that a generation already holds is not written (the trigger),
  // so that writer counts it as the duplicate it is. Autovacuum: the hot tables are vacuumed after 1 % of their
  // rows changed rather than 20 %; the dedup tables only grow until truncated, so inserts alone do not trigger it.
  6: `
    CREATE TABLE IF NOT EXISTS relay_seen_g0 (key BYTEA PRIMARY KEY) WITH (autovacuum_vacuum_insert_threshold = -1);
    CREATE TABLE IF NOT EXISTS relay_seen_g1 (key BYTEA PRIMARY KEY) WITH (autovacuum_vacuum_insert_threshold = -1);
    CREATE TABLE IF NOT EXISTS relay_seen_slots (slot SMALLINT PRIMARY KEY, from_ms BIGINT, to_ms BIGINT);
    INSERT INTO relay_seen_slots (slot) VALUES (0), (1) ON CONFLICT DO NOTHING;
    CREATE OR REPLACE FUNCTION relay_seen_known() RETURNS trigger LANGUAGE plpgsql AS $known$
    DECLARE
      h BYTEA := ${SQL_SEEN_HASH('NEW.message_key')};
    BEGIN
      IF EXISTS (SELECT 1 FROM relay_seen_g0 WHERE key = h) OR EXISTS (SELECT 1 FROM relay_seen_g1 WHERE key = h) THEN
        RETURN NULL;
      END IF;
      RETURN NEW;
    END
    $known$;
    DROP TRIGGER IF EXISTS relay_seen_known ON relay_seen;
    CREATE TRIGGER relay_seen_known BEFORE INSERT ON relay_seen FOR EACH ROW EXECUTE FUNCTION relay_seen_known();
    ALTER TABLE relay_events SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);
    ALTER TABLE relay_counts SET (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 500, fillfactor = 50);
    ALTER TABLE relay_sends SET (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 500);
  `,
  // What blocks a user's next event — one in flight, or one waiting for a later attempt — through a partial index
  // of just those rows (a few thousand however long the backlog), with the attempt time, so a seek finds only rows
  // that block now. relay_events_user stays while relays of an older version may run on the database (they need
  // it); a later schema drops it.
  7: `
    CREATE INDEX IF NOT EXISTS relay_events_busy ON relay_events (project_id, user_key, state, next_attempt_at) WHERE ${BUSY};
  `,
  // Fewer index entries per event (docs/relay-queue.md, "Indexes"). A fresh event is in the primary key and in
  // relay_events_waiting; leasing it moves it to relay_events_inflight (the lease's UPDATE writes one entry per index
  // whose predicate the new row meets: two, where schema 7 wrote five); a completed event is a DELETE (none).
  // relay_events_user and relay_events_ready (every event, every state) go; relay_events_leased's lease_until is no
  // longer indexed, so renewing a lease is a HOT update. Relays of an older version still work on these indexes.
  // The table is locked first, whole: building the indexes (SHARE) and then dropping the old ones (ACCESS EXCLUSIVE)
  // would upgrade the lock while a lease that read the table waits to write it, a deadlock.
  8: `
    LOCK TABLE relay_events IN ACCESS EXCLUSIVE MODE;
    CREATE INDEX IF NOT EXISTS relay_events_waiting ON relay_events (project_id, state, id) WHERE state IN ('pending', 'held');
    CREATE INDEX IF NOT EXISTS relay_events_inflight ON relay_events (project_id, user_key, id) WHERE state = 'leased';
    CREATE INDEX IF NOT EXISTS relay_events_later ON relay_events (project_id, user_key, next_attempt_at)
      WHERE state = 'pending' AND next_attempt_at > received_at;
    DROP INDEX IF EXISTS relay_events_ready, relay_events_user, relay_events_leased, relay_events_busy;
  `,
  // Lane owners and the inbox (docs/relay-queue.md, "PostgreSQL: lane owners"). Ingest writes each request's events
  // of a lane as one relay_inbox row, stamped with its transaction's id; the lane's owner reads rows by that id and
  // leases their events from memory. relay_lanes holds each lane's epoch, which every owner write checks.
  // relay_events keeps what is not in flight from the inbox: retries, users parked behind them, leases given back,
  // dead letters; relay_events_open finds a user there. The inbox's undelivered events are counted as pending.
  9: `
    CREATE TABLE IF NOT EXISTS relay_inbox (
      id BIGSERIAL PRIMARY KEY,
      project_id TEXT NOT NULL,
      xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
      events INTEGER NOT NULL,
      left_events INTEGER NOT NULL,
      received_at BIGINT NOT NULL,
      body TEXT NOT NULL,
      done BYTEA
    ) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);
    CREATE INDEX IF NOT EXISTS relay_inbox_lane ON relay_inbox (project_id, xid, id);
    CREATE TABLE IF NOT EXISTS relay_lanes (project_id TEXT PRIMARY KEY, epoch BIGINT NOT NULL);
    CREATE INDEX IF NOT EXISTS relay_events_open ON relay_events (project_id, user_key) WHERE state IN ('pending', 'held', 'leased');
    CREATE OR REPLACE FUNCTION relay_count_inbox() RETURNS trigger LANGUAGE plpgsql AS $count$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        ${countInbox('SELECT project_id, left_events AS n FROM new_rows')};
      ELSIF TG_OP = 'DELETE' THEN
        ${countInbox('SELECT project_id, -left_events AS n FROM old_rows')};
      ELSE
        ${countInbox('SELECT project_id, left_events AS n FROM new_rows UNION ALL SELECT project_id, -left_events FROM old_rows')};
      END IF;
      RETURN NULL;
    END
    $count$;
    ${countingTriggers('relay_inbox_count', 'relay_inbox', 'relay_count_inbox')}
    CREATE OR REPLACE FUNCTION relay_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $truncate$
    BEGIN
      ${RECOUNT};
      RETURN NULL;
    END
    $truncate$;
    DROP TRIGGER IF EXISTS relay_inbox_count_truncate ON relay_inbox;
    CREATE TRIGGER relay_inbox_count_truncate AFTER TRUNCATE ON relay_inbox
      FOR EACH STATEMENT EXECUTE FUNCTION relay_count_truncate();
  `,
  // A pause 1Flow asked of a lane (Retry-After, or failures in a row), as the relay that heard it wrote it: whoever
  // owns the lane next sends nothing before it (docs/relay-queue.md, "A pause is the lane's").
  // The table is altered only when the column is missing: ALTER TABLE locks it even when IF NOT EXISTS finds the
  // column, and a migration from before 8 already holds relay_events, which a relay's owner write takes after
  // relay_lanes (a deadlock).
  10: addLaneColumn('paused_until BIGINT'),
  // Settings of the queue itself, fixed when it is created: `buckets` (docs/relay-queue.md, "Buckets"), written by
  // migrate() once the migrations ran.
  11: `CREATE TABLE IF NOT EXISTS relay_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)`,
  // When a lane's owner of the moment took it: just after a PostgreSQL restart, a lane claimed before it is left to
  // that owner for a few seconds to take back with what it has in flight (docs/relay-queue.md, "A claim lost and
  // taken back"). Altered only when the column is missing, as 10.
  12: addLaneColumn('claimed_at TIMESTAMPTZ')
}

/** A migration adding a column (`name type`) to relay_lanes, altering the table only when the column is missing. */
function addLaneColumn(column: string): string {
  const [name] = column.split(' ')
  return `
    DO $add$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'relay_lanes'::regclass AND attname = '${name}') THEN
        ALTER TABLE relay_lanes ADD COLUMN ${column};
      END IF;
    END $add$;`
}

/**
 * On a queue created with buckets: a write of an event to a lane that is not a bucket (`<project>#<n>`) fails. Only a
 * relay of a version before buckets writes one (it would put a project's events in a lane no relay of this version
 * reads, and a user's events out of order). Its ingest then answers 503 (not a client's fault: the error is not
 * SQLSTATE class 22 or 23) and logs this message, so its events are sent again to a relay that can take them.
 */
const BUCKETED_LANES_ONLY = `
  CREATE OR REPLACE FUNCTION relay_bucketed_lanes() RETURNS trigger LANGUAGE plpgsql AS $only$
  DECLARE lane TEXT;
  BEGIN
    SELECT project_id INTO lane FROM new_rows WHERE position('#' IN project_id) = 0 LIMIT 1;
    IF lane IS NOT NULL THEN
      RAISE EXCEPTION 'this queue spreads each project over buckets of its users, and a relay of a version before them wrote an event to lane % of %: upgrade every relay that uses this database', lane, TG_TABLE_NAME
        USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN NULL;
  END $only$;
  CREATE OR REPLACE TRIGGER relay_inbox_bucketed AFTER INSERT ON relay_inbox REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION relay_bucketed_lanes();
  CREATE OR REPLACE TRIGGER relay_events_bucketed AFTER INSERT ON relay_events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION relay_bucketed_lanes();
`

/**
 * Held events one statement makes ready at most (the oldest first): a statement that made every held event of a
 * user ready at once outlived its statement timeout on a loaded machine once thousands were parked, every time it was
 * tried, and the lane stopped (docs/relay-queue.md, "Held events, a bounded step at a time"). A user with more keeps
 * the newer ones held, and is freed further by the next lease round, settle or recovery.
 */
export const UNHOLD_STEP = 2_000

/**
 * Events held behind the events `$1` that meet `guard` (their users') become pending again, each user's oldest
 * UNHOLD_STEP (so that each has a ready event for the next lease round to find): what blocked them is settled. The
 * held rows are locked in id order first: settles run beside each other (docs/relay-queue.md, "The lane's locks"),
 * and two that free the same user's rows (a caller settling one lease's outcomes at once) would otherwise take them
 * in any order and could deadlock.
 */
const UNHOLD_USERS_OF = (guard: string) => `
  unheld AS (
    UPDATE relay_events e SET state = 'pending'
    FROM (
      SELECT id FROM relay_events WHERE id IN (
        SELECT h.id FROM (SELECT DISTINCT project_id, user_key FROM relay_events WHERE id = ANY($1::bigint[]) AND ${guard}) u
        CROSS JOIN LATERAL (
          SELECT id FROM relay_events h WHERE h.project_id = u.project_id AND h.user_key = u.user_key AND h.state = 'held'
          ORDER BY h.id LIMIT ${UNHOLD_STEP}
        ) h
      ) ORDER BY id FOR UPDATE
    ) x
    WHERE e.id = x.id AND e.state = 'held'
  )`

/**
 * Held events of lane `$1` whose user has nothing in flight and no retry to wait for (at `$2`): ready again, the
 * oldest `$3` of them (see UNHOLD_STEP), and how many. Each held user is looked at once (the partial index
 * relay_events_held), with one seek per state. The rows are locked in id order, as settles lock them.
 */
const UNHOLD_STRANDED = `
  WITH held_users AS (SELECT DISTINCT user_key FROM relay_events WHERE project_id = $1 AND state = 'held'),
  stranded AS (
    SELECT u.user_key FROM held_users u
    WHERE NOT ${USER_BLOCKED}
  ),
  chunk AS (
    SELECT e.id FROM relay_events e JOIN stranded s ON e.user_key = s.user_key
    WHERE e.project_id = $1 AND e.state = 'held' ORDER BY e.id LIMIT $3 FOR UPDATE OF e
  ),
  unheld AS (UPDATE relay_events e SET state = 'pending' FROM chunk c WHERE e.id = c.id AND e.state = 'held' RETURNING 1)
  SELECT count(*)::int AS n FROM unheld`

/** Lanes with held events, one index seek each (a loose scan of relay_events_held), never a scan of the table. */
const LANES_WITH_HELD = `
  WITH RECURSIVE lanes AS (
    (SELECT project_id FROM relay_events WHERE state = 'held' ORDER BY project_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.project_id FROM relay_events e WHERE e.state = 'held' AND e.project_id > lanes.project_id ORDER BY e.project_id LIMIT 1)
    FROM lanes WHERE lanes.project_id IS NOT NULL
  )
  SELECT project_id FROM lanes WHERE project_id IS NOT NULL`

/** How long a live-size reading is reused; writes by this process are added to it meanwhile. */
const LIVE_BYTES_TTL_MS = 1_000

type Row = EventRow

/** Connect, statement and read timeout of every PostgreSQL call (ms). */
export const PG_TIMEOUT_MS = 5_000

/** How many times a transaction PostgreSQL chose as a deadlock's victim is run again. */
const DEADLOCK_RETRIES = 2

/**
 * Runs `work` in a transaction on a pooled client. On any failure the client is destroyed rather than
 * rolled back and reused: after a timeout its connection may still be busy, and a dropped connection rolls
 * the transaction back on the server anyway. A transaction PostgreSQL ended to break a deadlock (40P01) is run
 * again from the start, up to DEADLOCK_RETRIES times: every transaction here decides from what it reads in it,
 * and a deadlock between two settles, or a settle and a lease, is possible since they run beside each other
 * (docs/relay-queue.md, "The lane's locks").
 */
async function inTransaction<T>(
  pool: pg.Pool,
  work: (client: pg.PoolClient) => Promise<T>,
  begin = 'BEGIN'
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const client = await pool.connect()
    try {
      await client.query(begin)
      const result = await work(client)
      await client.query('COMMIT').catch((error: unknown) => {
        // Whether it committed may be unknown (the connection ended): the caller can tell this from a rollback.
        if (error && typeof error === 'object') Object.assign(error, { [COMMIT_SENT]: true })
        throw error
      })
      client.release()
      return result
    } catch (error) {
      client.release(error instanceof Error ? error : new Error(String(error)))
      if ((error as { code?: string }).code !== '40P01' || attempt >= DEADLOCK_RETRIES) throw error
    }
  }
}

/**
 * Begins a transaction of the delivery path (leases, settles, recovery), whose statements all find their rows
 * through an index: by id, or by lane and state in id order. Scans of the whole table or bitmaps of every pending
 * row are ruled out for its statements, in the same round trip as BEGIN. Without it a table PostgreSQL has not
 * analyzed yet (the first burst into a new queue, until autovacuum's first ANALYZE a minute or so later) gets
 * those plans for a lease of 500 ids, and each lease reads the whole backlog (docs/relay-queue.md, "Indexes").
 */
export const BEGIN_INDEXED = 'BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off'

/**
 * "Still pending", for statements that name their rows by id: written so that no index serves it (`state =
 * 'pending'` would let the planner walk relay_events_waiting instead of finding the ids by primary key). A row a
 * write without the lane's lock (a tool's bare id) dead-lettered meanwhile is left alone.
 */
const PENDING_BY_ID = "state NOT IN ('held', 'leased', 'dead')"

/**
 * The oldest arrival among the lanes `$1`' events not yet delivered, and the oldest dead letter's death: index seeks
 * (see stats()).
 */
export const OLDEST = `
  SELECT (SELECT min(least(
            (SELECT received_at FROM relay_events e WHERE e.project_id = lane.project_id AND e.state = 'pending' ORDER BY e.id LIMIT 1),
            (SELECT received_at FROM relay_events e WHERE e.project_id = lane.project_id AND e.state = 'held' ORDER BY e.id LIMIT 1),
            (SELECT min(received_at) FROM relay_events e WHERE e.project_id = lane.project_id AND e.state = 'leased'),
            (SELECT received_at FROM relay_inbox i WHERE i.project_id = lane.project_id ORDER BY i.xid, i.id LIMIT 1)))
          FROM unnest($1::text[]) AS lane(project_id)
         ) AS oldest,
         (SELECT dead_at FROM relay_events WHERE state = 'dead' ORDER BY dead_at LIMIT 1) AS oldest_dead`

/**
 * A lease's candidates in lane `$1` at `$2`: up to `$3` ready events, oldest first, each with its user's state —
 * one seek per user on each small partial index (relay_events_inflight, relay_events_later, relay_events_held),
 * never a walk over a user's backlog. One statement, so the leasing lock is held one round trip less.
 */
export const LEASE_CANDIDATES = `
  WITH c AS MATERIALIZED (
    SELECT id, user_key FROM relay_events WHERE project_id = $1 AND state = 'pending' AND ${READY} ORDER BY id LIMIT $3
  ), s AS (
    SELECT u.user_key, ${USER_BLOCKED} AS blocked,
      EXISTS (SELECT 1 FROM relay_events b WHERE b.project_id = $1 AND b.user_key = u.user_key AND b.state = 'held') AS held
    FROM (SELECT DISTINCT user_key FROM c) u
  )
  SELECT c.id, c.user_key, s.blocked, s.held FROM c JOIN s USING (user_key) ORDER BY c.id`

/** A lease takes the events `$1` (chosen under the leasing lock) until `$2` with token `$3`: only rows still pending. */
export const LEASE_TAKE = `UPDATE relay_events SET state = 'leased', lease_until = $2, lease_token = $3 WHERE id = ANY($1::bigint[]) AND ${PENDING_BY_ID} RETURNING *`

/** A lease parks the events `$1` (chosen under the leasing lock) behind their users' events in flight: only pending rows. */
export const LEASE_HOLD = `UPDATE relay_events SET state = 'held' WHERE id = ANY($1::bigint[]) AND ${PENDING_BY_ID}`

/** PostgreSQL text cannot hold NUL; 1Flow's responses, error texts and odd client ids may. */
const text = (value: string, max = Number.POSITIVE_INFINITY) =>
  (value.includes('\u0000') ? value.replace(/\u0000/g, '') : value).slice(0, max)

/**
 * A lease of relay_events' ready events of lane `projectId` (inside the owner's transaction, holding the lane lock
 * shared): retries, users parked behind them, leases taken back. A user in flight from the inbox (`flying`) counts as
 * blocked. The rows read need no row locks: only the owner writes the lane's pending and leased rows, and the writes
 * below still change only rows still pending (PENDING_BY_ID), whatever a tool's bare-id write did meanwhile.
 */
async function leaseFromTable(
  c: pg.PoolClient,
  projectId: string,
  limit: number,
  leaseMs: number,
  now: number,
  flying: (user: string) => boolean
): Promise<Job[]> {
  for (let round = 0; round < LEASE_ROUNDS; round++) {
    const { rows: found } = await c.query(LEASE_CANDIDATES, [projectId, now, limit])
    if (found.length === 0) return []
    const byUser = new Map<string, UserState>(
      found.map((r: Row) => [
        String(r.user_key),
        { blocked: Boolean(r.blocked) || flying(String(r.user_key)), held: Boolean(r.held) }
      ])
    )
    const plan = sortCandidates(
      found.map((r: Row): Candidate => ({ id: Number(r.id), userKey: String(r.user_key) })),
      (user) => byUser.get(user) as UserState
    )
    if (plan.hold.length > 0) await c.query(LEASE_HOLD, [plan.hold])
    // The oldest step of these users' held events (locked in id order, as settles lock them); a user with more is
    // skipped again by the next round, which frees the next step.
    if (plan.unhold.length > 0)
      await c.query(
        `UPDATE relay_events e SET state = 'pending' FROM (
           SELECT id FROM relay_events WHERE project_id = $1 AND state = 'held' AND user_key = ANY($2::text[])
           ORDER BY id LIMIT ${UNHOLD_STEP} FOR UPDATE
         ) x WHERE e.id = x.id AND e.state = 'held'`,
        [projectId, plan.unhold]
      )
    if (plan.lease.length > 0) {
      const { rows } = await c.query(LEASE_TAKE, [plan.lease, now + leaseMs, newLeaseToken()])
      return (rows as Row[]).sort((a, b) => Number(a.id) - Number(b.id)).map(rowToJob)
    }
  }
  return []
}

/** Writes events into relay_events in their order, in one statement (inside the caller's transaction); their ids. */
async function insertRows(c: pg.PoolClient, rows: readonly TableRow[]): Promise<number[]> {
  if (rows.length === 0) return []
  const { rows: ids } = await c.query(
    `INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state,
       attempts, first_attempt_at, last_error, lease_token, lease_until, dead_reason, dead_status, dead_response, dead_at)
     SELECT message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state,
       attempts, first_attempt_at, last_error, lease_token, lease_until, dead_reason, dead_status, dead_response, dead_at
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[],
       $9::int[], $10::bigint[], $11::text[], $12::bigint[], $13::bigint[], $14::text[], $15::int[], $16::text[], $17::bigint[])
       WITH ORDINALITY AS t(message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state,
         attempts, first_attempt_at, last_error, lease_token, lease_until, dead_reason, dead_status, dead_response, dead_at, ord)
     ORDER BY ord RETURNING id`,
    [
      rows.map((r) => text(r.job.messageId)),
      rows.map((r) => r.job.sourceName),
      rows.map((r) => r.job.projectId),
      rows.map((r) => text(r.job.userKey)),
      rows.map((r) => text(r.job.body)),
      rows.map((r) => r.job.receivedAt),
      rows.map((r) => r.nextAttemptAt ?? r.job.receivedAt),
      rows.map((r) => r.state),
      rows.map((r) => r.attempts ?? 0),
      rows.map((r) => r.firstAttemptAt ?? null),
      rows.map((r) => (r.lastError === undefined ? null : text(r.lastError, 500))),
      rows.map((r) => r.leaseToken ?? null),
      rows.map((r) => r.leaseUntil ?? null),
      rows.map((r) => (r.dead === undefined ? null : text(r.dead.reason, 1000))),
      rows.map((r) => r.dead?.status ?? null),
      rows.map((r) => (r.dead?.response === undefined ? null : text(r.dead.response, 2000))),
      rows.map((r) => r.deadAt ?? null)
    ]
  )
  // Ids follow the insert's order (ORDER BY ord).
  return ids.map((r: Row) => Number(r.id)).sort((a, b) => a - b)
}

/** A body PostgreSQL's text holds as it is: well-formed UTF-16 without NUL (others go escaped in the header). */
const pgStorable = (body: string) => wellFormed(body) && !body.includes('\u0000')

/**
 * A commit's fresh events (the first occurrence of each key in `fresh`, which this consumes) as inbox rows: one per
 * lane (a project's bucket among `buckets`) for all the commit's requests, in their order, at most INBOX_ROW_EVENTS
 * events each. One row per request and lane would make a commit of 30 requests 240 rows with 8 buckets, each a heap
 * tuple, an index entry and WAL to write, read, mark and delete (docs/relay-queue.md, "Buckets").
 */
function inboxRows(
  requests: ReadonlyArray<readonly NewEvent[]>,
  fresh: Set<string>,
  buckets: number
): Array<{ lane: string; events: InboxEvent[] }> {
  const lanes = new Map<string, InboxEvent[]>()
  for (const events of requests)
    for (const e of events) {
      if (e.deadReason !== undefined || !fresh.delete(text(dedupKey(e)))) continue
      const user = orderingKey(e.userKey)
      const lane = laneOf(e.projectId, user, buckets)
      let list = lanes.get(lane)
      if (!list) lanes.set(lane, (list = []))
      list.push([e.messageId, e.sourceName, user, e.body, e.receivedAt])
    }
  const out: Array<{ lane: string; events: InboxEvent[] }> = []
  for (const [lane, list] of lanes)
    for (let at = 0; at < list.length; at += INBOX_ROW_EVENTS)
      out.push({ lane, events: list.slice(at, at + INBOX_ROW_EVENTS) })
  return out
}

/** Inserts inbox rows in their order (their ids follow it), in one statement. */
async function insertInbox(
  c: pg.PoolClient,
  rows: ReadonlyArray<{ lane: string; events: InboxEvent[] }>
): Promise<void> {
  if (rows.length === 0) return
  await c.query(
    `INSERT INTO relay_inbox (project_id, events, left_events, received_at, body)
     SELECT lane, n, n, received_at, body FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[])
       WITH ORDINALITY AS t(lane, n, received_at, body, ord) ORDER BY ord`,
    [
      rows.map((r) => r.lane),
      rows.map((r) => r.events.length),
      rows.map((r) => Math.min(...r.events.map((e) => e[4]))),
      rows.map((r) => packInbox(r.events, pgStorable))
    ]
  )
}

/** A dedup generation's time range: keys first seen in [from, to); null while it holds none. */
interface SeenSlot {
  readonly slot: 0 | 1
  readonly from: number | null
  readonly to: number | null
}

async function readSlots(c: pg.PoolClient): Promise<{ slots: SeenSlot[]; dbNow: number }> {
  const { rows } = await c.query(`SELECT slot, from_ms, to_ms, ${DB_NOW} AS db_now FROM relay_seen_slots ORDER BY slot`)
  return {
    slots: (rows as Row[]).map((r) => ({
      slot: Number(r.slot) as 0 | 1,
      from: r.from_ms == null ? null : Number(r.from_ms),
      to: r.to_ms == null ? null : Number(r.to_ms)
    })),
    dbNow: Number((rows[0] as Row).db_now)
  }
}

/** TRUNCATE `table` if its lock can be had within 50 ms (no reader outside the relays holds it); whether it was. */
async function truncateAtOnce(c: pg.PoolClient, table: string): Promise<boolean> {
  await c.query('SAVEPOINT truncate_at_once')
  try {
    await c.query("SET LOCAL lock_timeout = '50ms'")
    await c.query(`TRUNCATE ${table}`)
    await c.query('RELEASE SAVEPOINT truncate_at_once')
    return true
  } catch (error) {
    if ((error as { code?: string }).code !== '55P03') throw error
    await c.query('ROLLBACK TO SAVEPOINT truncate_at_once')
    return false
  }
}

/** The generation new keys go to: the one with the latest range, if any holds one. */
function currentSlot(slots: readonly SeenSlot[]): SeenSlot | undefined {
  return slots.filter((s) => s.to !== null).sort((a, b) => (b.to as number) - (a.to as number))[0]
}

/** A dedup key as stored in a generation: the first 16 bytes of its SHA-256 (what migration 6 computes in SQL). */
export function seenHash(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest().subarray(0, 16)
}

/** A stable 32-bit key for an advisory lock on a name. */
export function lockKey(name: string): number {
  let h = 0
  for (let i = 0; i < name.length; i++) h = (Math.imul(31, h) + name.charCodeAt(i)) | 0
  return h
}

/**
 * BEGIN_INDEXED and the lane's locks in one round trip: a delivery transaction that holds them from its first answer
 * (docs/relay-queue.md, "The lane's locks"). The keys are 32-bit integers, written as literals.
 *
 * - `lease`: one lease of the lane at a time (the leasing lock, exclusive), beside settles (the lane lock, shared);
 * - `settle`: the lane lock shared: settles run beside each other and beside leases;
 * - `takeover`: the lane lock alone, so nothing else writes the lane's rows meanwhile.
 *
 * Relays of an older version take the lane lock exclusively for their leases and settles (which decided from two
 * readings, and relied on settles waiting): they run alone, as before.
 */
const beginHoldingLane = (projectId: string, purpose: 'lease' | 'settle' | 'takeover') => {
  const lane = lockKey(`lease:${projectId}`)
  switch (purpose) {
    case 'lease':
      return `${BEGIN_INDEXED}; SELECT pg_advisory_xact_lock_shared(${lane}); SELECT pg_advisory_xact_lock(${lockKey(`leasing:${projectId}`)})`
    case 'settle':
      return `${BEGIN_INDEXED}; SELECT pg_advisory_xact_lock_shared(${lane})`
    case 'takeover':
      return `${BEGIN_INDEXED}; SELECT pg_advisory_xact_lock(${lane})`
  }
}

/**
 * The scale-out queue: several relays on one PostgreSQL database. Same semantics as SQLite — committed
 * before the 200, messageId dedup per source, leases (one lease of a project at a time, on the lane's leasing
 * lock, so a user's events are never in flight on two relays; settles beside it, fenced by the lease's token),
 * retries and dead letters — plus a request limiter shared by all relays. Migrations run on open, under an advisory lock, safe from many at once.
 */
export class PgQueue implements Queue {
  private readonly commits: GroupCommit

  /** The lanes this relay owns, and their events in flight from the inbox (docs/relay-queue.md). */
  private readonly owners: PgLaneOwners

  private constructor(
    private readonly pool: pg.Pool,
    windowMs: number,
    maxEvents: number,
    /** How long a messageId is remembered at least (limits.dedupWindowHours): each generation's time range. */
    private readonly dedupWindowMs: number,
    private readonly clockAheadToleranceMs: number,
    url: string,
    timeoutMs: number,
    ownedIdleMs: number | undefined,
    /** How many buckets each project is spread over (docs/relay-queue.md, "Buckets"): the database's setting. */
    readonly buckets: number
  ) {
    this.owners = new PgLaneOwners({
      pool,
      url,
      ownedIdleMs,
      timeoutMs,
      tx: (work, begin) => inTransaction(pool, work, begin),
      beginOwnerWrite: (lane) => beginHoldingLane(lane, 'settle'),
      beginTakeover: (lane) => beginHoldingLane(lane, 'takeover'),
      // The key relays of older versions take for each lease: they cannot lease a lane a relay owns.
      ownerKey: (lane) => lockKey(`leasing:${lane}`),
      laneLockKey: (lane) => lockKey(`lease:${lane}`),
      buckets,
      projectPausedUntil: async (project) => {
        const { rows } = await pool.query('SELECT paused_until FROM relay_lanes WHERE project_id = $1', [project])
        return Number((rows[0] as Row | undefined)?.paused_until ?? 0)
      },
      laneState: async (lane, epoch) => {
        const { rows } = await pool.query(
          `SELECT EXISTS (SELECT 1 FROM relay_lanes WHERE project_id = $1 AND epoch = $2) AS mine,
                  EXISTS (SELECT 1 FROM relay_events WHERE project_id = $1 AND state IN ('pending', 'held', 'leased')) AS open,
                  (SELECT paused_until FROM relay_lanes WHERE project_id = $3) AS paused_until`,
          [lane, epoch, projectOf(lane)]
        )
        const r = rows[0] as Row
        return { mine: Boolean(r.mine), open: Boolean(r.open), pausedUntil: Number(r.paused_until ?? 0) }
      },
      usersWithOpenRows: async (lane, users) => {
        if (users.length === 0) return new Set()
        const { rows } = await pool.query(
          "SELECT DISTINCT user_key FROM relay_events WHERE project_id = $1 AND user_key = ANY($2::text[]) AND state IN ('pending', 'held', 'leased')",
          [lane, users.map((u) => text(u))]
        )
        return new Set(rows.map((r: Row) => String(r.user_key)))
      },
      leaseFromTable: (c, lane, limit, leaseMs, now, flying) => leaseFromTable(c, lane, limit, leaseMs, now, flying),
      insertRows,
      takeBackLane: async (c, lane) => {
        const { rowCount } = await c.query(
          "UPDATE relay_events SET state = 'pending', lease_until = NULL, lease_token = NULL WHERE project_id = $1 AND state = 'leased'",
          [lane]
        )
        return rowCount ?? 0
      },
      unholdStranded: async (c, lane, now) => {
        const { rows } = await c.query(UNHOLD_STRANDED, [lane, now, UNHOLD_STEP])
        return Number((rows[0] as Row).n) >= UNHOLD_STEP
      }
    })
    // SQLSTATE class 22 (data exception: a value PostgreSQL refuses), 23 (integrity), or a value the client
    // cannot serialize: one request's fault, not the database's.
    this.commits = new GroupCommit(
      (requests) => this.write(requests),
      windowMs,
      maxEvents,
      (error) =>
        /^2[23]/.test(String((error as { code?: unknown }).code)) ||
        error instanceof TypeError ||
        error instanceof RangeError
    )
  }

  static async open(
    url: string,
    options: {
      commitWindowMs?: number
      commitMaxEvents?: number
      poolSize?: number
      timeoutMs?: number
      dedupWindowMs?: number
      /**
       * How far ahead of the database's clock an event's arrival time is believed for dedup (default 60 s). Tests
       * that drive their own timeline far from today's pass Infinity.
       */
      clockAheadToleranceMs?: number
      /** How long a lane this relay owns may go unused before it is let go (default 60 s; tests shorten it). */
      ownedIdleMs?: number
      /**
       * How many buckets each project is spread over if this call creates the queue (DEFAULT_BUCKETS); a queue that
       * exists keeps its own (see buckets).
       */
      buckets?: number
    } = {}
  ): Promise<PgQueue> {
    const timeoutMs = options.timeoutMs ?? PG_TIMEOUT_MS
    const wanted = options.buckets ?? DEFAULT_BUCKETS
    if (!Number.isInteger(wanted) || wanted < 1 || wanted > MAX_BUCKETS)
      throw new RangeError(`buckets must be a whole number from 1 to ${MAX_BUCKETS}, not ${wanted}`)
    const buckets = await PgQueue.migrate(url, timeoutMs, wanted)
    const pool = new pg.Pool({
      connectionString: url,
      max: options.poolSize ?? 10,
      // A database that stops answering must fail a request in seconds, not hang it: connect, statement (on
      // the server) and read (here) timeouts, TCP keepalive to notice a dead peer, idle clients recycled.
      connectionTimeoutMillis: timeoutMs,
      statement_timeout: timeoutMs,
      query_timeout: timeoutMs + 1000,
      // A relay's transactions never wait on anything outside the database; one that sits idle is a relay frozen
      // (SIGSTOP, a VM paused) mid-transaction, whose locks (its lane's lease lock among them) would stall every
      // other relay: ended in 2 s.
      idle_in_transaction_session_timeout: Math.min(2_000, timeoutMs),
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      idleTimeoutMillis: 30_000
    })
    // A client's connection can die at any time (the server crashes, the network drops). An idle client's
    // error is reported by the pool; a checked-out one has no listener of pg's own, and an 'error' event
    // without a listener ends the process. The failure reaches the caller anyway, as its query's rejection.
    pool.on('error', () => undefined)
    pool.on('connect', (client) => client.on('error', () => undefined))
    const queue = new PgQueue(
      pool,
      options.commitWindowMs ?? 2,
      options.commitMaxEvents ?? 4096,
      options.dedupWindowMs ?? DEFAULT_DEDUP_WINDOW_MS,
      options.clockAheadToleranceMs ?? CLOCK_AHEAD_TOLERANCE_MS,
      url,
      timeoutMs,
      options.ownedIdleMs,
      buckets
    )
    return queue
  }

  private async tx<T>(work: (client: pg.PoolClient) => Promise<T>, begin?: string): Promise<T> {
    return inTransaction(this.pool, work, begin)
  }

  /**
   * Migrations run on a connection of their own, without the pool's read timeout and with no statement timeout: on a
   * large queue one may take minutes (migration 4 counts the backlog once). Each waits at most 2 s for a table's
   * lock, so relays already running are not stalled behind it; it is tried again. Relays starting meanwhile wait
   * for the one migrating (MIGRATION_LOCK).
   */
  private static async migrate(url: string, timeoutMs: number, buckets: number): Promise<number> {
    const c = new pg.Client({
      connectionString: url,
      connectionTimeoutMillis: timeoutMs,
      keepAlive: true,
      idle_in_transaction_session_timeout: Math.min(2_000, timeoutMs)
    })
    c.on('error', () => undefined)
    await c.connect()
    try {
      await c.query('BEGIN')
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
      await c.query("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '2s'")
      await c.query('CREATE TABLE IF NOT EXISTS relay_schema (version INTEGER NOT NULL)')
      const { rows } = await c.query('SELECT version FROM relay_schema')
      let version = rows.length > 0 ? Number(rows[0].version) : 0
      if (rows.length === 0) await c.query('INSERT INTO relay_schema (version) VALUES (0)')
      const created = version === 0
      while (version < SCHEMA_VERSION) {
        version++
        await c.query(MIGRATIONS[version] as string)
        await c.query('UPDATE relay_schema SET version = $1', [version])
      }
      // A queue created now spreads projects over buckets; one upgraded from before them keeps one per project: its
      // events already queued are each in their project's lane, and moving them is not built (docs/relay-queue.md).
      await c.query("INSERT INTO relay_settings (name, value) VALUES ('buckets', $1) ON CONFLICT DO NOTHING", [
        String(created ? buckets : 1)
      ])
      const { rows: setting } = await c.query("SELECT value FROM relay_settings WHERE name = 'buckets'")
      if (created && buckets > 1) await c.query(BUCKETED_LANES_ONLY)
      await c.query('COMMIT')
      const n = Number((setting[0] as Row).value)
      if (!Number.isInteger(n) || n < 1 || n > MAX_BUCKETS) throw new BucketsSettingError((setting[0] as Row).value)
      return n
    } finally {
      await c.end().catch(() => undefined)
    }
  }

  enqueue(events: readonly NewEvent[]): Promise<EnqueueResult> {
    return this.commits.add(events)
  }

  /**
   * One group commit: every request's events in one statement; each request's accepted/duplicate counts. Keys go
   * to the current dedup generation (or, with a later window start, to relay_seen); a key in either generation
   * or in relay_seen is a duplicate. The commit holds SEEN_LOCK shared, so no rotation truncates a generation
   * between its reading which one is current and its commit. Keys are inserted in key order: two relays
   * committing the same ids (a client retrying through a load balancer) wait on each other, never deadlock.
   */
  private async write(requests: ReadonlyArray<readonly NewEvent[]>): Promise<EnqueueResult[]> {
    // The first occurrence of each key in this commit is a candidate; later ones are duplicates already.
    const firsts = new Map<string, NewEvent>()
    const dead: NewEvent[] = []
    let newest = 0
    for (const events of requests) {
      for (const e of events) {
        if (e.deadReason !== undefined) dead.push(e)
        else if (!firsts.has(text(dedupKey(e)))) firsts.set(text(dedupKey(e)), e)
        newest = Math.max(newest, e.receivedAt)
      }
    }
    const rows = [...firsts.entries()]
    /** When this commit's keys count as seen for the generations (see seenAt). */
    let at = newest
    for (;;) {
      const fresh = await this.tx(async (c) => {
        if (rows.length === 0) {
          await this.insertDead(c, dead)
          return new Set<string>()
        }
        await c.query('SELECT pg_advisory_xact_lock_shared($1)', [SEEN_LOCK])
        const { slots, dbNow } = await readSlots(c)
        const current = currentSlot(slots)
        // This commit's keys are newer than the current generation's range: rotate first (then write again).
        at = this.seenAt(newest, dbNow)
        if (current === undefined || at >= (current.to as number)) return undefined
        if (dead.length > 0) await this.insertDead(c, dead)
        const long = (e: NewEvent) => e.dedupFrom !== undefined && e.dedupFrom > e.receivedAt
        const { rows: inserted } = await c.query(
          `WITH incoming AS (
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::boolean[], $4::bigint[])
               AS t(message_key, hash, long, dedup_from)
           ), seen_before AS (
             SELECT i.message_key FROM incoming i
             WHERE EXISTS (SELECT 1 FROM ${SEEN_TABLES[1 - current.slot]} g WHERE g.key = i.hash)
                OR EXISTS (SELECT 1 FROM relay_seen s WHERE s.message_key = i.message_key)
           ), fresh_short AS (
             INSERT INTO ${SEEN_TABLES[current.slot]} (key)
             SELECT hash FROM incoming WHERE NOT long AND message_key NOT IN (SELECT message_key FROM seen_before)
             ORDER BY hash
             ON CONFLICT DO NOTHING RETURNING key
           ), fresh_long AS (
             INSERT INTO relay_seen (message_key, seen_at)
             SELECT message_key, dedup_from FROM incoming WHERE long AND message_key NOT IN (SELECT message_key FROM seen_before)
             ORDER BY message_key
             ON CONFLICT DO NOTHING RETURNING message_key
           )
           SELECT message_key FROM incoming WHERE NOT long AND hash IN (SELECT key FROM fresh_short)
           UNION ALL SELECT message_key FROM fresh_long`,
          [
            rows.map(([k]) => k),
            rows.map(([k]) => seenHash(k)),
            rows.map(([, e]) => long(e)),
            rows.map(([, e]) => e.dedupFrom ?? e.receivedAt)
          ]
        )
        const fresh = new Set(inserted.map((r: Row) => String(r.message_key)))
        await insertInbox(c, inboxRows(requests, new Set(fresh), this.buckets))
        return fresh
      })
      if (fresh === undefined) {
        await this.rotate(at)
        continue
      }
      // Until the next reading, what this relay wrote counts toward the disk cap at once.
      for (const events of requests) for (const e of events) this.live.bytes += e.body.length
      return requests.map((events) => {
        let accepted = 0
        let rejected = 0
        for (const e of events) {
          if (e.deadReason !== undefined) rejected++
          else if (fresh.delete(text(dedupKey(e)))) accepted++
        }
        return { accepted, duplicates: events.length - accepted - rejected }
      })
    }
  }

  private async insertDead(c: pg.PoolClient, dead: readonly NewEvent[]): Promise<void> {
    await c.query(
      `INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state, dead_reason, dead_at)
       SELECT message_id, source_name, project_id, user_key, body, received_at, received_at, 'dead', dead_reason, received_at
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[]) AS t(message_id, source_name, project_id, user_key, body, received_at, dead_reason)`,
      [
        dead.map((e) => text(e.messageId)),
        dead.map((e) => e.sourceName),
        // In their user's lane: a replayed dead letter is delivered by that lane's owner.
        dead.map((e) => laneOf(e.projectId, orderingKey(e.userKey), this.buckets)),
        dead.map((e) => text(e.userKey)),
        dead.map((e) => text(e.body)),
        dead.map((e) => e.receivedAt),
        dead.map((e) => text(e.deadReason as string, 1000))
      ]
    )
  }

  /**
   * When keys stamped `receivedAt` count as seen, for the generations: the relay's own time, but never more than
   * clockAheadToleranceMs ahead of the database's clock. One relay whose clock jumped ahead must not rotate the
   * generations early (forgetting the older one's keys) nor open a range in the future.
   */
  private seenAt(receivedAt: number, dbNow: number): number {
    return Math.min(receivedAt, dbNow + this.clockAheadToleranceMs)
  }

  /**
   * Makes a generation current for keys seen at `at`: the other one, emptied by TRUNCATE, with the range
   * [end of the current one, + the window) (or from `at` after a quiet spell). Its keys are all older than the
   * window (ranges follow each other, each a window long). The current generation is stretched instead when the
   * other's keys are not that old (another relay's window is shorter than this one's) or when its TRUNCATE cannot
   * have the table at once (a reader such as pg_dump holds it): ingest never waits on anyone outside the relays.
   * Under SEEN_LOCK exclusive: no commit is between reading the slots and writing a key meanwhile.
   */
  private async rotate(at: number): Promise<void> {
    const w = this.dedupWindowMs
    await this.tx(async (c) => {
      await c.query("SET LOCAL lock_timeout = '2s'")
      await c.query('SELECT pg_advisory_xact_lock($1)', [SEEN_LOCK])
      const { slots } = await readSlots(c)
      const current = currentSlot(slots)
      if (current !== undefined && at < (current.to as number)) return // another commit rotated first
      const other = slots.find((s) => s.slot !== current?.slot) as SeenSlot
      const stretch = () =>
        c.query('UPDATE relay_seen_slots SET to_ms = $2 WHERE slot = $1', [(current as SeenSlot).slot, at + w])
      if (current !== undefined && other.to !== null && other.to > at - w) {
        await stretch()
        return
      }
      if (other.to !== null && !(await truncateAtOnce(c, SEEN_TABLES[other.slot]))) {
        if (current !== undefined) await stretch()
        return
      }
      const from = current !== undefined && at < (current.to as number) + w ? (current.to as number) : at
      await c.query('UPDATE relay_seen_slots SET from_ms = $2, to_ms = $3 WHERE slot = $1', [
        other.slot,
        from,
        from + w
      ])
    })
  }

  /**
   * Leases a lane's events if this relay owns the lane, or takes it if nobody does (else none): see PgLaneOwners.
   * One relay leases a lane, so a user's events are never in flight on two relays.
   */
  lease(projectId: string, limit: number, leaseMs: number, now: number): Promise<Job[]> {
    if (this.buckets <= 1) return this.owners.lease(projectId, limit, leaseMs, now)
    return this.owners.leaseProject(projectId, lanesOf(projectId, this.buckets), limit, leaseMs, now)
  }

  deliveryHeldBack(): string | undefined {
    return this.owners.deliveryHeldBack()
  }

  /**
   * 1Flow asked that nothing more be sent on `projectId` before `until`: written for every relay, so that whoever owns
   * the lane next (this relay died, or let the lane go while it waited) waits too. Any relay that heard it may write
   * it, owner or not (it is 1Flow's word, true whoever heard it), and a pause is only ever made longer, never shorter.
   */
  async pauseLane(projectId: string, until: number): Promise<void> {
    this.owners.notePause(projectId, until)
    // Believed at most the longest pause 1Flow may ask for, plus clockAheadToleranceMs, past the database's clock: a
    // relay whose clock runs a day ahead must not pause the lane for a day (it could never be shortened).
    const ahead = Number.isFinite(this.clockAheadToleranceMs) ? MAX_RETRY_AFTER_MS + this.clockAheadToleranceMs : null
    // On the project's row: with buckets, every bucket's owner reads it there (a row of epoch 0 until someone owns
    // the project itself, which only a queue without buckets does).
    await this.pool.query(
      `INSERT INTO relay_lanes AS l (project_id, epoch, paused_until)
       VALUES ($1, 0, LEAST($2::bigint, (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $3::bigint))
       ON CONFLICT (project_id) DO UPDATE SET paused_until = GREATEST(COALESCE(l.paused_until, 0), excluded.paused_until)`,
      [projectId, Math.round(until), ahead]
    )
  }

  /**
   * Runs the statement `sql(guard)` for `refs`: `$1` is the ids, `params` follow, and `guard` is a condition on the
   * rows the statement must add to its WHERE (and to any subquery choosing rows to act for). Bare ids are written at
   * once (guard TRUE); each lease's ids in a transaction holding its lane's lock shared (beside leases and other
   * settles, never beside a recovery), guarded by `state = 'leased'` and the lease's token: the one statement changes
   * only rows that lease still holds, and returns their ids (RETURNING id).
   */
  private async fenced(refs: readonly JobRef[], sql: (guard: string) => string, params: unknown[]): Promise<number[]> {
    const { bare, leases } = splitRefs(refs)
    const done: number[] = []
    if (bare.length > 0) {
      const { rows } = await this.pool.query(sql('TRUE'), [bare, ...params])
      done.push(...rows.map((r: Row) => Number(r.id)))
    }
    const token = `$${params.length + 2}`
    const statement = sql(`state = 'leased' AND lease_token = ${token}`)
    for (const [lease, { projectId, ids }] of leases) {
      const { rows } = await this.owners.inLaneTurn(projectId, () =>
        this.tx((c) => c.query(statement, [ids, ...params, lease]), beginHoldingLane(projectId, 'settle'))
      )
      this.owners.tableLeasesEnded(projectId, ids)
      done.push(...rows.map((r: Row) => Number(r.id)))
    }
    return done
  }

  /** `sql` on the events `ids` (guarded as fenced() says), after their users' held events are made pending again. */
  private settle(refs: readonly JobRef[], sql: string, params: unknown[]): Promise<number[]> {
    return this.fenced(
      refs,
      (guard) => `WITH ${UNHOLD_USERS_OF(guard)} ${sql} WHERE id = ANY($1::bigint[]) AND ${guard} RETURNING id`,
      params
    )
  }

  /**
   * Extends leases still held: one statement per lease, guarded by its token. It changes no state, so it needs
   * no lane lock (a renewal waiting behind a lane's settles could outlast the lease it renews): a recovery of the
   * same rows and a renewal are ordered by the rows' locks, and the second finds the first's result.
   */
  async renew(refs: readonly JobRef[], leaseUntil: number): Promise<number[]> {
    // Deliveries under way keep their lanes in use: a lane whose long deliveries fill its concurrency (no lease for a
    // minute) must not be let go while its leases in relay_events are live (the next owner would take them back).
    this.owners.touch(new Set(refs.flatMap((r) => (typeof r === 'number' ? [] : [r.projectId]))))
    const { table, mem, alias } = this.owners.resolve(refs)
    const flying = await this.owners.renew(mem, leaseUntil)
    for (const { jobId, ref } of flying.moved) alias.set(typeof ref === 'number' ? ref : ref.id, jobId)
    const renewed = await this.renewTable([...table, ...flying.moved.map((m) => m.ref)], leaseUntil)
    return [...renewed.map((id) => alias.get(id) ?? id), ...flying.ids]
  }

  private async renewTable(refs: readonly JobRef[], leaseUntil: number): Promise<number[]> {
    if (refs.length === 0) return []
    const { bare, leases } = splitRefs(refs)
    const extend =
      "UPDATE relay_events SET lease_until = GREATEST(COALESCE(lease_until, 0), $2) WHERE id = ANY($1::bigint[]) AND state = 'leased'"
    if (bare.length > 0) await this.pool.query(extend, [bare, leaseUntil])
    const renewed = [...bare]
    for (const [token, { projectId, ids }] of leases) {
      const { rows } = await this.pool.query(`${extend} AND lease_token = $3 RETURNING id`, [ids, leaseUntil, token])
      const held = rows.map((r: Row) => Number(r.id))
      const kept = new Set(held)
      this.owners.tableLeasesEnded(projectId, held, leaseUntil)
      this.owners.tableLeasesEnded(
        projectId,
        ids.filter((id) => !kept.has(id))
      )
      renewed.push(...held)
    }
    return renewed
  }

  async complete(refs: readonly JobRef[]): Promise<void> {
    const { table, mem } = this.owners.resolve(refs)
    table.push(...(await this.owners.settle(mem, { kind: 'complete' })))
    if (table.length > 0) await this.settle(table, 'DELETE FROM relay_events', [])
  }

  async release(refs: readonly JobRef[], readyAt: number): Promise<void> {
    const { table, mem } = this.owners.resolve(refs)
    table.push(...(await this.owners.settle(mem, { kind: 'pending', readyAt })))
    if (table.length === 0) return
    await this.settle(
      table,
      "UPDATE relay_events SET state = 'pending', lease_until = NULL, lease_token = NULL, next_attempt_at = $2",
      [readyAt]
    )
  }

  async retry(refs: readonly JobRef[], nextAttemptAt: number, error: string, now: number): Promise<void> {
    const { table, mem } = this.owners.resolve(refs)
    table.push(...(await this.owners.settle(mem, { kind: 'pending', readyAt: nextAttemptAt, failed: { error, now } })))
    if (table.length === 0) return
    await this.fenced(
      table,
      (guard) =>
        `UPDATE relay_events SET state = 'pending', lease_until = NULL, lease_token = NULL, attempts = attempts + 1, next_attempt_at = $2, last_error = $3, first_attempt_at = COALESCE(first_attempt_at, $4) WHERE id = ANY($1::bigint[]) AND ${guard} RETURNING id`,
      [nextAttemptAt, text(error, 500), now]
    )
  }

  async deadLetter(refs: readonly JobRef[], info: DeadLetterInfo, now: number): Promise<void> {
    const { table, mem } = this.owners.resolve(refs)
    table.push(...(await this.owners.settle(mem, { kind: 'dead', info, now })))
    if (table.length === 0) return
    await this.settle(
      table,
      "UPDATE relay_events SET state = 'dead', lease_until = NULL, lease_token = NULL, dead_reason = $2, dead_status = $3, dead_response = $4, dead_at = $5, attempts = attempts + $6, first_attempt_at = COALESCE(first_attempt_at, $7)",
      [
        text(info.reason, 1000),
        info.status ?? null,
        info.response === undefined ? null : text(info.response, 2000),
        now,
        info.sent ? 1 : 0,
        info.sent ? now : null
      ]
    )
  }

  async recoverLeases(now: number): Promise<number> {
    // Events in flight from the inbox whose lease ended first: back to relay_events as ready (their users' other
    // flying events with them, as still leased, taken back below if their lease ended too).
    let recovered = await this.owners.recover(now)
    // Lanes with an expired lease (relay_events_leased) or held events (relay_events_held). Each is recovered by its
    // owner alone: this relay recovers the lanes it owns; another relay's are its own to recover, and a lane nobody
    // owns has every lease taken back by the takeover of the next relay to lease it (docs/relay-queue.md, "Recovery
    // is the owner's"). Per lane, one guarded statement takes back only rows still leased and expired, and, in writes
    // of their own (a bounded step each, the lane's leases between them), held events whose user has nothing in
    // flight any more are made ready.
    const { rows: expiredLanes } = await this.pool.query(
      "SELECT DISTINCT project_id FROM relay_events WHERE state = 'leased' AND lease_until <= $1",
      [now]
    )
    const { rows: heldLanes } = await this.pool.query(LANES_WITH_HELD)
    for (const { project_id: projectId } of expiredLanes as Array<{ project_id: string }>) {
      const n = await this.owners.asOwner(projectId, async (c) => {
        const { rows } = await c.query(
          `WITH expired AS (
             UPDATE relay_events SET state = 'pending', lease_until = NULL, lease_token = NULL
             WHERE project_id = $1 AND state = 'leased' AND lease_until <= $2 RETURNING id
           ) SELECT count(*)::int AS n FROM expired`,
          [projectId, now]
        )
        return Number((rows[0] as Row).n)
      })
      recovered += n ?? 0
    }
    const lanes = new Set([...expiredLanes, ...heldLanes].map((r: Row) => String(r.project_id)))
    // A lane whose step fails (a slow statement) leaves the others their turn; the failure is reported at the end.
    let failed: unknown
    for (const projectId of lanes)
      await this.owners.unstrand(projectId, now).catch((error: unknown) => (failed ??= error))
    if (failed !== undefined) throw failed
    // With the leases takeovers took back (counted here, once the recovery went through, so a failed one loses none).
    return recovered + this.owners.takeTakenBack()
  }

  /**
   * Forgets keys seen before `before` (never later than the database's clock allows, see seenAt): each generation
   * whose whole range ends by then, by TRUNCATE (if its table can be had at once; else next time), then relay_seen's
   * rows (webhooks, and keys from before schema 6) in batches, so a large table is worked through, never one
   * statement that outlives its timeout. A truncated generation counts as PostgreSQL's estimate of its rows
   * (counting them exactly would read them all).
   */
  async pruneDedup(before: number): Promise<number> {
    let forgotten = 0
    const { rows: due } = await this.pool.query(
      `SELECT slot FROM relay_seen_slots WHERE to_ms <= least($1::bigint, ${DB_NOW} + $2::bigint - $3::bigint)`,
      [before, Math.floor(Math.min(this.clockAheadToleranceMs, Number.MAX_SAFE_INTEGER / 4)), this.dedupWindowMs]
    )
    if (due.length > 0)
      await this.tx(async (c) => {
        await c.query("SET LOCAL lock_timeout = '2s'")
        await c.query('SELECT pg_advisory_xact_lock($1)', [SEEN_LOCK])
        // Read again under the lock: a rotation since may have given a slot a new range and new keys.
        const { slots, dbNow } = await readSlots(c)
        const cut = Math.min(before, this.seenAt(Number.MAX_SAFE_INTEGER, dbNow) - this.dedupWindowMs)
        for (const { slot, to } of slots) {
          if (to === null || to > cut) continue
          const table = SEEN_TABLES[slot] as string
          const { rows: estimate } = await c.query(
            `SELECT greatest(reltuples, 0)::bigint AS n FROM pg_class WHERE oid = '${table}'::regclass`
          )
          if (!(await truncateAtOnce(c, table))) continue
          forgotten += Number((estimate[0] as Row).n)
          await c.query('UPDATE relay_seen_slots SET from_ms = NULL, to_ms = NULL WHERE slot = $1', [slot])
        }
      })
    const started = Date.now()
    for (;;) {
      const deleted =
        (
          await this.pool.query(
            'DELETE FROM relay_seen WHERE ctid = ANY (ARRAY(SELECT ctid FROM relay_seen WHERE seen_at < $1 LIMIT $2))',
            [before, PRUNE_BATCH]
          )
        ).rowCount ?? 0
      forgotten += deleted
      if (deleted < PRUNE_BATCH || Date.now() - started > PRUNE_BUDGET_MS) return forgotten
    }
  }

  /**
   * The figures from the counters (a few dozen rows, whatever the queue holds) and index seeks: the oldest event
   * is the first by id of each lane's live states (ids follow arrival; pending and held from relay_events_waiting,
   * leased the least arrival among the lane's few in-flight rows in relay_events_inflight: by id, the planner would
   * walk the primary key through the whole table for a lane with nothing in flight), the oldest dead letter the first entry of
   * relay_events_dead.
   */
  async stats(now: number): Promise<QueueStats> {
    const { rows } = await this.pool.query(
      'SELECT project_id, state, retrying, sum(n) AS n, sum(bytes) AS bytes FROM relay_counts GROUP BY 1, 2, 3'
    )
    let pending = 0
    let leased = 0
    let retrying = 0
    let dead = 0
    let deadBytes = 0
    const lanes: Record<string, number> = {}
    const laneIds = new Set<string>()
    for (const r of rows as Row[]) {
      const n = Number(r.n)
      if (n === 0) continue
      const state = String(r.state)
      if (state === 'dead') {
        dead += n
        deadBytes += Number(r.bytes)
        continue
      }
      // Per project: a project's buckets are lanes of their own here, one lane outside the queue.
      const project = projectOf(String(r.project_id))
      lanes[project] = (lanes[project] ?? 0) + n
      laneIds.add(String(r.project_id))
      if (state === 'leased') leased += n
      else {
        pending += n
        if (r.retrying) retrying += n
      }
    }
    // Events in flight from the inbox are counted as pending by the database; this relay knows its own.
    for (const n of this.owners.flyingPerLane().values()) {
      leased += n
      pending -= n
    }
    const { rows: oldest } = await this.pool.query(OLDEST, [[...laneIds]])
    const o = oldest[0] as Row
    return {
      pending,
      leased,
      retrying,
      dead,
      oldestAgeMs: o.oldest == null ? 0 : Math.max(0, now - Number(o.oldest)),
      bytes: await this.liveBytes(),
      lanes,
      deadLetters: {
        count: dead,
        bytes: deadBytes,
        oldestAgeMs: o.oldest_dead == null ? 0 : Math.max(0, now - Number(o.oldest_dead))
      }
    }
  }

  /** The figures by a scan of every event: what stats() must always equal (tests). */
  async scanStats(now: number): Promise<Omit<QueueStats, 'bytes'>> {
    const { rows } = await this.pool.query(
      `SELECT count(*) FILTER (WHERE state IN ('pending', 'held')) AS pending, count(*) FILTER (WHERE state = 'leased') AS leased,
              count(*) FILTER (WHERE state = 'dead') AS dead, count(*) FILTER (WHERE state IN ('pending', 'held') AND attempts > 0) AS retrying,
              min(received_at) FILTER (WHERE state <> 'dead') AS oldest,
              sum(${DEAD_BYTES}) FILTER (WHERE state = 'dead') AS dead_bytes, min(dead_at) FILTER (WHERE state = 'dead') AS oldest_dead
       FROM relay_events`
    )
    const row = rows[0] as Row
    const { rows: inbox } = await this.pool.query(
      'SELECT coalesce(sum(left_events), 0) AS n, min(received_at) AS oldest FROM relay_inbox'
    )
    const lanes = await this.pool.query(
      `SELECT project_id, sum(n) AS n FROM (
         SELECT project_id, count(*) AS n FROM relay_events WHERE state <> 'dead' GROUP BY project_id
         UNION ALL SELECT project_id, sum(left_events) FROM relay_inbox GROUP BY project_id
       ) t GROUP BY project_id HAVING sum(n) > 0`
    )
    const flying = [...this.owners.flyingPerLane().values()].reduce((a, b) => a + b, 0)
    const oldest = [row.oldest, (inbox[0] as Row).oldest].filter((v) => v != null).map(Number)
    return {
      pending: Number(row.pending) + Number((inbox[0] as Row).n) - flying,
      leased: Number(row.leased) + flying,
      retrying: Number(row.retrying),
      dead: Number(row.dead),
      oldestAgeMs: oldest.length === 0 ? 0 : Math.max(0, now - Math.min(...oldest)),
      lanes: lanes.rows.reduce((out: Record<string, number>, r: Row) => {
        const project = projectOf(String(r.project_id))
        out[project] = (out[project] ?? 0) + Number(r.n)
        return out
      }, {}),
      deadLetters: {
        count: Number(row.dead),
        bytes: Number(row.dead_bytes ?? 0),
        oldestAgeMs: row.oldest_dead == null ? 0 : Math.max(0, now - Number(row.oldest_dead))
      }
    }
  }

  private live = { at: 0, bytes: 0 }

  async liveBytes(): Promise<number> {
    const now = Date.now()
    if (now - this.live.at > LIVE_BYTES_TTL_MS) {
      // The tables' size scaled by their share of live rows: rows deleted by a drained backlog stop counting at
      // once, before VACUUM gives the space back.
      const { rows } = await this.pool.query(
        `SELECT coalesce(sum(pg_total_relation_size(c.oid) * CASE WHEN coalesce(s.n_live_tup + s.n_dead_tup, 0) > 0
                  THEN s.n_live_tup::float8 / (s.n_live_tup + s.n_dead_tup) ELSE 1 END), 0) AS bytes
         FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
         WHERE c.relname IN ('relay_events', 'relay_inbox', 'relay_seen', 'relay_seen_g0', 'relay_seen_g1') AND c.relkind = 'r'`
      )
      this.live = { at: now, bytes: Math.round(Number((rows[0] as Row).bytes)) }
    }
    return this.live.bytes
  }

  async pruneDead(deadBefore: number, maxBytes: number): Promise<PruneResult> {
    return this.tx(async (c) => {
      const expired =
        (await c.query("DELETE FROM relay_events WHERE state = 'dead' AND dead_at < $1", [deadBefore])).rowCount ?? 0
      // The oldest dead letters whose removal brings the rest under maxBytes (a running total, newest first).
      const { rowCount } = await c.query(
        `DELETE FROM relay_events WHERE id IN (
           SELECT id FROM (
             SELECT id, sum(${DEAD_BYTES}) OVER (ORDER BY dead_at DESC, id DESC) AS newer_bytes FROM relay_events WHERE state = 'dead'
           ) t WHERE newer_bytes > $1
         )`,
        [maxBytes]
      )
      return { expired, overSize: rowCount ?? 0 }
    })
  }

  async compact(): Promise<void> {
    // PostgreSQL's autovacuum gives space back; liveBytes() already leaves dead rows out. The counters of
    // connections that have gone are folded into shard 0, and empty counter rows dropped, so stats() stays small.
    await this.pool.query(
      `WITH gone AS (
         DELETE FROM relay_counts WHERE shard <> 0 AND shard NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
         RETURNING project_id, state, retrying, n, bytes)
       INSERT INTO relay_counts AS c (project_id, state, retrying, shard, n, bytes)
       SELECT project_id, state, retrying, 0, sum(n), sum(bytes) FROM gone GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
       ON CONFLICT (project_id, state, retrying, shard) DO UPDATE SET n = c.n + excluded.n, bytes = c.bytes + excluded.bytes`
    )
    await this.pool.query('DELETE FROM relay_counts WHERE n = 0 AND bytes = 0')
  }

  async listDead(options: ListDeadOptions = {}): Promise<DeadLetter[]> {
    const { rows } = await this.pool.query(
      `SELECT * FROM relay_events WHERE state = 'dead' AND id > $3 AND ($1::text IS NULL OR source_name = $1) ORDER BY id LIMIT $2`,
      [options.sourceName ?? null, options.limit ?? 100, options.afterId ?? 0]
    )
    return (rows as Row[]).map(rowToDeadLetter)
  }

  async replayDead(selection: Selection, now: number): Promise<number> {
    const set =
      "SET state = 'pending', attempts = 0, first_attempt_at = NULL, next_attempt_at = $1, last_error = NULL, dead_reason = NULL, dead_status = NULL, dead_response = NULL, dead_at = NULL"
    if (selection === 'all')
      return (await this.pool.query(`UPDATE relay_events ${set} WHERE state = 'dead'`, [now])).rowCount ?? 0
    return (
      (
        await this.pool.query(`UPDATE relay_events ${set} WHERE state = 'dead' AND id = ANY($2::bigint[])`, [
          now,
          selection
        ])
      ).rowCount ?? 0
    )
  }

  async purgeDead(selection: Selection): Promise<number> {
    if (selection === 'all')
      return (await this.pool.query("DELETE FROM relay_events WHERE state = 'dead'")).rowCount ?? 0
    return (
      (await this.pool.query("DELETE FROM relay_events WHERE state = 'dead' AND id = ANY($1::bigint[])", [selection]))
        .rowCount ?? 0
    )
  }

  async checkWritable(): Promise<void> {
    // A real write, committed (one row; autovacuum takes care of its old versions).
    await this.pool.query('UPDATE relay_schema SET version = version')
  }

  sharedLimiter(projectId: string, maxPerSecond: number, options: { inFlightMs: number; clock: Clock }): SendLimiter {
    return new PgSendLimiter(this.pool, projectId, maxPerSecond, options.inFlightMs, options.clock)
  }

  async close(): Promise<void> {
    await this.commits.flush()
    await this.owners.close()
    await this.pool.end()
  }
}

/** How long after its grant a slot may still start a request (then it is returned unused). */
const GRANT_FRESH_MS = 50

/** Send slots granted together by relay_take_sends: one row of relay_sends, ended when the last of them is. */
interface Grant {
  readonly id: number
  readonly at: number
  unused: number
  inFlight: number
  ended: boolean
}

/**
 * The request limit across every relay on the database. Slots are granted by one statement (relay_take_sends:
 * under the lane's advisory lock, on the database's clock) as many at once as this relay's senders are waiting
 * for, so a busy relay asks once per group of sends, not once per send (docs/relay-queue.md, "Shared rate limit").
 * A grant counts in full from the moment it is made until a second after its last request's answer — or, if its
 * relay died, until none of its requests could still be in flight — so the limit holds across relays whatever
 * each does with its slots. A slot left unused for GRANT_FRESH_MS is given up.
 */
class PgSendLimiter implements SendLimiter {
  private readonly limit: AdaptiveLimit
  private readonly lockKey: number
  private grant: Grant | undefined
  /** Senders waiting for a slot: how many the next request to the database asks for. */
  private waiting = 0
  private asking: Promise<void> | undefined

  constructor(
    private readonly pool: pg.Pool,
    private readonly projectId: string,
    max: number,
    private readonly inFlightMs: number,
    private readonly clock: Clock
  ) {
    this.limit = new AdaptiveLimit(max, clock.now())
    this.lockKey = lockKey(`rate:${projectId}`)
  }

  get current(): number {
    return this.limit.current
  }

  async acquire(): Promise<() => void> {
    for (;;) {
      const slot = this.take()
      if (slot) return slot
      this.waiting++
      try {
        this.asking ??= this.ask().finally(() => (this.asking = undefined))
        await this.asking
      } finally {
        this.waiting--
      }
    }
  }

  /** A slot of the current grant if it is fresh; its release ends the grant once every slot is back. */
  private take(): (() => void) | undefined {
    const grant = this.grant
    if (!grant || grant.unused === 0) return undefined
    if (this.clock.now() - grant.at > GRANT_FRESH_MS) {
      this.drop(grant)
      return undefined
    }
    grant.unused--
    grant.inFlight++
    let released = false
    return () => {
      if (released) return
      released = true
      grant.inFlight--
      this.endIfDone(grant)
    }
  }

  /** Gives up a grant's unused slots (they count until it ends, which is at once if none is in flight). */
  private drop(grant: Grant): void {
    grant.unused = 0
    if (this.grant === grant) this.grant = undefined
    this.endIfDone(grant)
  }

  private endIfDone(grant: Grant): void {
    if (grant.ended || grant.unused > 0 || grant.inFlight > 0) return
    grant.ended = true
    void this.pool.query(`UPDATE relay_sends SET ended_at = ${DB_NOW} WHERE id = $1`, [grant.id]).catch(() => undefined)
  }

  /** Asks the database for as many slots as senders wait; if none is free, waits until one may be. */
  private async ask(): Promise<void> {
    if (this.grant) this.drop(this.grant)
    const limit = Math.floor(this.limit.at(this.clock.now()))
    const { rows } = await this.pool.query('SELECT * FROM relay_take_sends($1, $2, $3, $4, $5)', [
      this.projectId,
      this.lockKey,
      Math.max(1, this.waiting),
      limit,
      this.inFlightMs
    ])
    const row = rows[0] as Row
    if (Number(row.granted) > 0) {
      this.grant = { id: Number(row.id), at: this.clock.now(), unused: Number(row.granted), inFlight: 0, ended: false }
      return
    }
    await this.clock.sleep(Math.max(1, Math.min(Number(row.wait_ms), 1000)))
  }

  throttled(): void {
    this.limit.throttled(this.clock.now())
  }
}
