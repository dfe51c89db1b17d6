import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import type pg from 'pg'
import { createDatabase, startThrowawayPostgres, type ThrowawayPostgres } from '@oneflow-seg/testkit/postgres'
import { systemClock } from '../../rate-limiter'
import {
  BEGIN_INDEXED,
  LEASE_CANDIDATES,
  LEASE_HOLD,
  LEASE_TAKE,
  lockKey,
  OLDEST,
  PgQueue,
  seenHash
} from '../pg-queue'
import { InboxRowError, type Job, type Queue } from '../queue'
import { packInbox } from '../inbox'
import { advisoryLockId, mayHaveCommitted } from '../pg-inbox'
import { laneOf, lanesOf } from '../buckets'
import { describeQueue, event, leaseProperty, T0 } from './queue-conformance'
import { sql, until } from '../../__tests__/helpers'
import { FreezableProxy } from '../../__tests__/freezable-proxy'

const urls = new WeakMap<Queue, string>()
/**
 * The suite's timeline (T0) is not today's: arrival times are believed whatever the database's clock says. One bucket
 * per project: the tests of a lane's owner below look at the one lane of project p1 (buckets have tests of their own).
 */
const FAKE_TIME = { clockAheadToleranceMs: Number.POSITIVE_INFINITY, buckets: 1 }
const IN_BUCKETS = { clockAheadToleranceMs: Number.POSITIVE_INFINITY, buckets: 8 }
let n = 0

/** relay_events' indexes as schema 7 had them (schema 5 and 6 lacked relay_events_busy), in place of schema 8's. */
const EVENT_INDEXES_BEFORE_8 = `
  DROP INDEX relay_events_waiting, relay_events_inflight, relay_events_later;
  CREATE INDEX relay_events_ready ON relay_events (project_id, state, id);
  CREATE INDEX relay_events_user ON relay_events (project_id, user_key, state, next_attempt_at);
  CREATE INDEX relay_events_leased ON relay_events (lease_until) WHERE state = 'leased';
  CREATE INDEX relay_events_busy ON relay_events (project_id, user_key, state, next_attempt_at)
    WHERE state = 'leased' OR (state = 'pending' AND next_attempt_at > received_at);`

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** A queue on a database of its own and another session on it (another relay, an operator), closed after `test`. */
async function withOtherSession(
  name: string,
  test: (q: PgQueue, other: pg.Client, url: string) => Promise<void>
): Promise<void> {
  const url = await createDatabase(inject('pgAdminUrl'), `${name}_${process.pid}`)
  const q = await PgQueue.open(url, FAKE_TIME)
  const { default: postgres } = await import('pg')
  const other = new postgres.Client(url)
  await other.connect()
  try {
    await test(q, other, url)
  } finally {
    await other.end()
    await q.close()
  }
}

/**
 * Waits until a session on `url` is seen waiting for a lock (true), or `finished()` says the call under test
 * ended first (false): whether that call had to wait, without guessing how long it takes.
 */
async function waitsForLock(url: string, finished: () => boolean): Promise<boolean> {
  for (;;) {
    if (finished()) return false
    const waiting = await sql(
      url,
      "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    if (waiting.length > 0) return true
    await sleep(20)
  }
}
/** What the tests look at inside a queue's lane owners (PgLaneOwners): its claims' pinger, counters and connection. */
function ownersOf(q: PgQueue) {
  return (
    q as unknown as {
      owners: {
        pinger: NodeJS.Timeout
        reclaimed: number
        takenAfresh: number
        owner?: pg.Client
        ping(): Promise<void>
      }
    }
  ).owners
}

/**
 * `owner` frozen, as far as its claims go (a relay frozen, or one that died with its process still here): its claims'
 * pinger stops, so it takes nothing back on a new connection (an owner that is alive does, see "a claim lost and
 * taken back"). Then the session holding `lane`'s claim ends, as PostgreSQL's idle_session_timeout ends a frozen
 * relay's (or a crash does).
 */
async function endClaim(url: string, lane: string, owner: PgQueue): Promise<void> {
  clearInterval(ownersOf(owner).pinger)
  await sql(
    url,
    `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = ${lockKey(`leasing:${lane}`) >>> 0}`
  )
}

/** Queues opened with `options`: each `open` on a database of its own, `reopen` on the same one again. */
function pgQueues(name: string, options: Parameters<typeof PgQueue.open>[1]) {
  const reopen = async (queue: Queue) => {
    const again = await PgQueue.open(urls.get(queue) as string, options)
    urls.set(again, urls.get(queue) as string)
    return again
  }
  return {
    open: async () => {
      const url = await createDatabase(inject('pgAdminUrl'), `${name}_${process.pid}_${n++}`)
      const queue = await PgQueue.open(url, options)
      urls.set(queue, url)
      return queue
    },
    reopen,
    // A crash is the owner's process gone: its claim ends with its connections, and a new queue takes the lane over.
    crash: async (queue: Queue) => {
      await queue.close()
      return reopen(queue)
    },
    scan: async (queue: Queue, now: number) => (queue as PgQueue).scanStats(now)
  }
}

describeQueue('PostgreSQL', { ...pgQueues('conformance', FAKE_TIME), statsRuns: 12 })
describeQueue('PostgreSQL, projects in buckets', {
  ...pgQueues('conformance_buckets', IN_BUCKETS),
  statsRuns: 12,
  oldestFirstAcrossUsers: false
})

describe('PostgreSQL: counters under concurrent relays', () => {
  it('two relays enqueueing, leasing and settling at once: no deadlock, and the counters equal a scan', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `counters_${process.pid}`)
    const relays = await Promise.all([PgQueue.open(url), PgQueue.open(url)])
    try {
      let seq = 0
      const work = async (q: PgQueue, round: number) => {
        const now = T0 + round * 10
        await q.enqueue(
          Array.from({ length: 20 }, () => {
            const n = seq++
            // One arrival time for all: with two relays committing at once, ids follow commit order, and the oldest
            // event by id (what stats() seeks) is the oldest by time only for events received in that order.
            return event(n, { projectId: n % 2 ? 'p1' : 'p2', userKey: `u-${n % 11}`, receivedAt: T0 })
          })
        )
        const jobs = await q.lease(round % 2 ? 'p1' : 'p2', 15, 60_000, now)
        const [done, failed, dead] = [jobs.slice(0, 5), jobs.slice(5, 10), jobs.slice(10)]
        await Promise.all([
          q.complete(done),
          q.retry(failed, now + 5, 'boom', now),
          q.deadLetter(dead, { reason: 'refused', response: 'no', sent: true }, now)
        ])
      }
      await Promise.all(relays.flatMap((q, r) => Array.from({ length: 15 }, (_, i) => work(q, i * 2 + r))))
      await relays[0]!.compact()
      const now = T0 + 1_000
      const { bytes: _bytes, ...counted } = await relays[1]!.stats(now)
      expect(counted).toEqual(await relays[1]!.scanStats(now))
      expect(counted.dead + counted.pending).toBeGreaterThan(0)
    } finally {
      await Promise.all(relays.map((q) => q.close()))
    }
  }, 60_000)

  it('a TRUNCATE of the queue (an operator emptying it) empties the counters too', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `truncate_${process.pid}`)
    const q = await PgQueue.open(url)
    try {
      await q.enqueue(Array.from({ length: 10 }, (_, i) => event(i)))
      expect((await q.stats(T0 + 10)).pending).toBe(10)
      const { default: pg } = await import('pg')
      const admin = new pg.Client(url)
      await admin.connect()
      await admin.query(
        "INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at) VALUES ('t', 'web', 'p1#0', 'u', '{}', 1, 1)"
      )
      expect((await q.stats(T0 + 10)).pending).toBe(11)
      await admin.query('TRUNCATE relay_events')
      // Each table's TRUNCATE counts again from both: the inbox's events still count after the events table's.
      expect((await q.stats(T0 + 10)).pending).toBe(10)
      await admin.query('TRUNCATE relay_inbox')
      await admin.end()
      const { bytes: _bytes, ...counted } = await q.stats(T0 + 10)
      expect(counted).toEqual(await q.scanStats(T0 + 10))
      expect(counted.pending).toBe(0)
    } finally {
      await q.close()
    }
  })
})

describe('PostgreSQL: the shared rate limit', () => {
  it('three relays with twelve senders each never pass the limit in any window, and use it', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `limiter_${process.pid}`)
    const relays = await Promise.all([0, 1, 2].map(() => PgQueue.open(url)))
    const LIMIT = 40
    const sends: Array<{ start: number; end: number }> = []
    try {
      const until = Date.now() + 2_500
      await Promise.all(
        relays.flatMap((q) => {
          const limiter = q.sharedLimiter('lane', LIMIT, { inFlightMs: 3_000, clock: systemClock })
          return Array.from({ length: 12 }, async () => {
            while (Date.now() < until) {
              const done = await limiter.acquire()
              const send = { start: Date.now(), end: Number.POSITIVE_INFINITY }
              sends.push(send)
              await new Promise((r) => setTimeout(r, Math.random() * 30))
              send.end = Date.now()
              done()
            }
          })
        })
      )
    } finally {
      await Promise.all(relays.map((q) => q.close()))
    }
    // Seen here, a send starts after its grant and ends before the database hears so: each counts (from its start
    // until a second after its end) for no longer than the database counted it.
    const busiest = Math.max(
      ...sends.map((s) => sends.filter((o) => o.start <= s.start && s.start < o.end + 1000).length)
    )
    expect(busiest).toBeLessThanOrEqual(LIMIT)
    // 2.5 s allow three windows' worth; slots given up unused or a slow machine may cost some, not most.
    expect(sends.length).toBeGreaterThanOrEqual(LIMIT + 20)
  }, 30_000)

  it('slots of a relay that died count until they could no longer be in flight, then are free again', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `limiter_dead_${process.pid}`)
    const [dying, alive] = await Promise.all([PgQueue.open(url), PgQueue.open(url)])
    try {
      const options = { inFlightMs: 800, clock: systemClock }
      const taken = dying.sharedLimiter('lane', 5, options)
      const first = Date.now()
      for (let i = 0; i < 5; i++) await taken.acquire() // never answered: the relay dies with them in flight
      await dying.close()
      await alive.sharedLimiter('lane', 5, options).acquire()
      // Not before 0.8 s in flight + 1 s of window after the first grant (the database's clock is this machine's).
      expect(Date.now() - first).toBeGreaterThanOrEqual(1_750)
    } finally {
      await alive.close()
    }
  }, 30_000)
})

describe('PostgreSQL: dedup generations', () => {
  const W = 1_000 // a one-second window: generations rotate within the test

  it('stores 16-byte keys, remembers a key for at least the window across rotations, and forgets by TRUNCATE', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `seen_${process.pid}`)
    const q = await PgQueue.open(url, { dedupWindowMs: W, ...FAKE_TIME })
    try {
      const at = (n: number, t: number) => event(n, { receivedAt: t })
      expect(await q.enqueue([at(1, T0)])).toEqual({ accepted: 1, duplicates: 0 })
      expect(await sql(url, 'SELECT octet_length(key) AS n FROM relay_seen_g0')).toEqual([{ n: 16 }])
      // A window later: the next generation takes new keys; the old one still answers for m-1.
      expect(await q.enqueue([at(2, T0 + W), at(1, T0 + W)])).toEqual({ accepted: 1, duplicates: 1 })
      expect(await sql(url, 'SELECT count(*)::int AS n FROM relay_seen_g1')).toEqual([{ n: 1 }])
      // Pruning before the first generation's range has ended forgets nothing; after, it truncates it whole.
      await q.pruneDedup(T0 + W - 1)
      expect(await q.enqueue([at(1, T0 + W + 1)])).toEqual({ accepted: 0, duplicates: 1 })
      await q.pruneDedup(T0 + W)
      expect(await sql(url, 'SELECT count(*)::int AS n FROM relay_seen_g0')).toEqual([{ n: 0 }])
      expect(await q.enqueue([at(1, T0 + W + 2)])).toEqual({ accepted: 1, duplicates: 0 })
      // Keys are rows of one table per generation: nothing was ever deleted row by row.
      const [stats] = await sql(
        url,
        "SELECT coalesce(sum(n_tup_del), 0)::int AS deleted FROM pg_stat_user_tables WHERE relname LIKE 'relay_seen_g%'"
      )
      expect(stats).toEqual({ deleted: 0 })
    } finally {
      await q.close()
    }
  })

  it('two relays committing the same ids while a generation rotates accept each id once', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `seen_race_${process.pid}`)
    const relays = await Promise.all([0, 1].map(() => PgQueue.open(url, { dedupWindowMs: W, ...FAKE_TIME })))
    try {
      let accepted = 0
      // 40 rounds over four windows; both relays send every id of a round, in reverse orders.
      for (let round = 0; round < 40; round++) {
        const t = T0 + round * 100
        const ids = Array.from({ length: 25 }, (_, i) => round * 25 + i)
        const results = await Promise.all([
          relays[0]!.enqueue(ids.map((n) => event(n, { receivedAt: t }))),
          relays[1]!.enqueue([...ids].reverse().map((n) => event(n, { receivedAt: t + 1 })))
        ])
        accepted += results.reduce((n, r) => n + r.accepted, 0)
        // Every earlier id is still known: none of them is older than the window by more than a generation.
        if (round > 0) {
          const again = await relays[round % 2]!.enqueue([event((round - 1) * 25, { receivedAt: t + 2 })])
          expect(again).toEqual({ accepted: 0, duplicates: 1 })
        }
      }
      expect(accepted).toBe(1_000)
    } finally {
      await Promise.all(relays.map((q) => q.close()))
    }
  }, 60_000)

  it('hashes a key as migration 6 does (keys seen before the upgrade stay known), non-ASCII and long keys too', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `seen_hash_${process.pid}`)
    for (const key of ['web|m-1', 'web|ñandú-🙂', 'webhook:web|a'.repeat(40)]) {
      const [row] = await sql(url, `SELECT substring(sha256(convert_to('${key}', 'UTF8')) FROM 1 FOR 16) AS h`)
      expect(Buffer.from(row!.h as Buffer).equals(seenHash(key))).toBe(true)
    }
  })

  it('after an upgrade from schema 5, keys seen before stay known, and a relay of the older version counts a key the generations hold as a duplicate', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `seen_upgrade_${process.pid}`)
    await (await PgQueue.open(url)).close()
    // A schema-5 database: keys as text rows of relay_seen only.
    await sql(
      url,
      `DROP TRIGGER relay_seen_known ON relay_seen; DROP FUNCTION relay_seen_known(); DROP TABLE relay_seen_g0, relay_seen_g1, relay_seen_slots;
       ${EVENT_INDEXES_BEFORE_8} DROP INDEX relay_events_busy;
       UPDATE relay_schema SET version = 5;
       INSERT INTO relay_seen (message_key, seen_at) VALUES ('web|m-1', ${Date.now()})`
    )
    const q = await PgQueue.open(url)
    try {
      const now = Date.now()
      expect(await q.enqueue([event(1, { receivedAt: now }), event(3, { receivedAt: now })])).toEqual({
        accepted: 1,
        duplicates: 1
      })
      // What an older relay's ingest writes for m-3, which a generation now holds: nothing, so it says duplicate.
      const old =
        'INSERT INTO relay_seen (message_key, seen_at) VALUES ($KEY, 0) ON CONFLICT DO NOTHING RETURNING message_key'
      expect(await sql(url, old.replace('$KEY', "'web|m-3'"))).toEqual([])
      expect(await sql(url, old.replace('$KEY', "'web|m-4'"))).toEqual([{ message_key: 'web|m-4' }])
      // …and what it wrote, a new relay sees.
      expect(await q.enqueue([event(4, { receivedAt: now })])).toEqual({ accepted: 0, duplicates: 1 })
    } finally {
      await q.close()
    }
  })

  it('one event from a relay whose clock jumped days ahead does not rotate the generations early', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `seen_clock_${process.pid}`)
    const q = await PgQueue.open(url)
    const DAY = 24 * 3_600_000
    try {
      const now = Date.now()
      expect(await q.enqueue([event(1, { receivedAt: now })])).toEqual({ accepted: 1, duplicates: 0 })
      await q.enqueue([event(2, { receivedAt: now + 2 * DAY })])
      await q.enqueue([event(3, { receivedAt: now + 4 * DAY })])
      await q.pruneDedup(now + 3 * DAY)
      expect(await q.enqueue([event(1, { receivedAt: now + 1_000 })])).toEqual({ accepted: 0, duplicates: 1 })
      const [range] = await sql(url, 'SELECT max(to_ms)::float8 AS t FROM relay_seen_slots')
      expect(range!.t as number).toBeLessThanOrEqual(Date.now() + 60_000 + DAY)
    } finally {
      await q.close()
    }
  })

  it('a reader holding a generation (pg_dump) never stalls ingest: the current generation is stretched instead', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `seen_reader_${process.pid}`)
    const q = await PgQueue.open(url, { dedupWindowMs: W, ...FAKE_TIME })
    const { default: pg } = await import('pg')
    const reader = new pg.Client(url)
    await reader.connect()
    try {
      await q.enqueue([event(1, { receivedAt: T0 })])
      await q.enqueue([event(2, { receivedAt: T0 + W })]) // generation 1 opens; generation 0 (m-1) is the older
      await reader.query('BEGIN')
      await reader.query('SELECT count(*) FROM relay_seen_g0')
      // Generation 0 is due to be emptied, but its reader holds it: the commit goes on, m-1 stays known.
      expect(await q.enqueue([event(3, { receivedAt: T0 + 2 * W })])).toEqual({ accepted: 1, duplicates: 0 })
      await q.pruneDedup(T0 + 2 * W)
      expect(await q.enqueue([event(1, { receivedAt: T0 + 2 * W + 1 })])).toEqual({ accepted: 0, duplicates: 1 })
      await reader.query('COMMIT')
      await q.pruneDedup(T0 + 2 * W)
      expect(await q.enqueue([event(1, { receivedAt: T0 + 2 * W + 2 })])).toEqual({ accepted: 1, duplicates: 0 })
    } finally {
      await reader.end()
      await q.close()
    }
  })
})

describe('PostgreSQL: indexes (schema 8)', () => {
  const indexes = async (url: string) =>
    (await sql(url, "SELECT indexname FROM pg_indexes WHERE tablename = 'relay_events' ORDER BY 1")).map((r) =>
      String(r.indexname)
    )

  it('an upgrade from schema 7 keeps events in every state, fences the leases taken before it, and delivers in order', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `indexes_${process.pid}`)
    await (await PgQueue.open(url, FAKE_TIME)).close()
    // Two users, three events each, interleaved, as a relay of schema 7 left them: u-a's first is leased (its others
    // are held behind it), u-b's first failed and waits for a retry.
    await sql(
      url,
      `INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state, attempts, lease_until, lease_token)
       VALUES ('m-0', 'web', 'p1', 'u-a', '{}', ${T0}, ${T0}, 'leased', 0, ${T0 + 60_000}, 42),
              ('m-1', 'web', 'p1', 'u-b', '{}', ${T0 + 1}, ${T0 + 1_000}, 'pending', 1, NULL, NULL),
              ('m-2', 'web', 'p1', 'u-a', '{}', ${T0 + 2}, ${T0 + 2}, 'held', 0, NULL, NULL),
              ('m-3', 'web', 'p1', 'u-b', '{}', ${T0 + 3}, ${T0 + 3}, 'pending', 0, NULL, NULL),
              ('m-4', 'web', 'p1', 'u-a', '{}', ${T0 + 4}, ${T0 + 4}, 'held', 0, NULL, NULL),
              ('m-5', 'web', 'p1', 'u-b', '{}', ${T0 + 5}, ${T0 + 5}, 'pending', 0, NULL, NULL)`
    )
    const [leasedRow] = await sql(url, "SELECT id FROM relay_events WHERE message_id = 'm-0'")
    const first = [{ id: Number(leasedRow!.id), lease: 42, projectId: 'p1', userKey: 'u-a' }]
    const events = [0, 1, 2, 3, 4, 5]
    expect(await sql(url, 'SELECT state, count(*)::int AS n FROM relay_events GROUP BY 1 ORDER BY 1')).toEqual([
      { state: 'held', n: 2 },
      { state: 'leased', n: 1 },
      { state: 'pending', n: 3 }
    ])
    const q = await PgQueue.open(url, FAKE_TIME)
    try {
      expect(await indexes(url)).toEqual([
        'relay_events_dead',
        'relay_events_held',
        'relay_events_inflight',
        'relay_events_later',
        'relay_events_open',
        'relay_events_pkey',
        'relay_events_waiting'
      ])
      // A stale token changes nothing; the lease's own token completes its event and gives u-a's others back.
      await q.complete(first.map((j) => ({ ...j, lease: (j.lease as number) + 1 })))
      expect((await q.stats(T0 + 20)).leased).toBe(1)
      await q.complete(first)
      const delivered: Array<{ id: number; user: string }> = []
      for (let at = T0 + 20; delivered.length < events.length && at < T0 + 5_000; at += 100) {
        const jobs = await q.lease('p1', 10, 60_000, at)
        delivered.push(...jobs.map((j) => ({ id: j.id, user: j.userKey })))
        await q.complete(jobs)
      }
      delivered.unshift(...first.map((j) => ({ id: j.id, user: j.userKey })))
      for (const user of ['u-a', 'u-b']) {
        const ids = delivered.filter((d) => d.user === user).map((d) => d.id)
        expect(ids).toHaveLength(3)
        expect(ids).toEqual([...ids].sort((a, b) => a - b))
      }
      expect(await q.stats(T0 + 5_000)).toMatchObject({ pending: 0, leased: 0, retrying: 0 })
      const { bytes: _bytes, ...counted } = await q.stats(T0 + 5_000)
      expect(counted).toEqual(await q.scanStats(T0 + 5_000))
    } finally {
      await q.close()
    }
  })
})

describe('PostgreSQL: migrating under load', () => {
  it('schema 7 -> current while a relay leases and settles on the same table: the migration goes through, no deadlock', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `migrate_busy_${process.pid}`)
    const busy = await PgQueue.open(url, FAKE_TIME)
    // A schema-7 table holding a backlog on three lanes (index builds take long enough to overlap the leases).
    await sql(
      url,
      `INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at)
       SELECT 'm-' || g, 'web', 'p' || (g % 3), 'u-' || (g % 5000), repeat('x', 200), ${T0} + g, ${T0} + g
       FROM generate_series(1, 100000) g;
       ${EVENT_INDEXES_BEFORE_8} ANALYZE relay_events;
       UPDATE relay_schema SET version = 7`
    )
    let stop = false
    const failures: string[] = []
    const work = ['p0', 'p1', 'p2'].map(async (lane) => {
      while (!stop) {
        try {
          await busy.complete(await busy.lease(lane, 50, 60_000, T0 + 1_000_000))
        } catch (error) {
          failures.push((error as Error).message)
        }
      }
    })
    try {
      await sleep(300)
      // The lock is waited for (up to 2 s) and may be given up under a long transaction; a deadlock must never be.
      let migrated: PgQueue | undefined
      const errors: string[] = []
      for (let attempt = 0; attempt < 3 && !migrated; attempt++)
        migrated = await PgQueue.open(url, FAKE_TIME).catch((error: Error) => {
          errors.push(error.message)
          return undefined
        })
      expect(errors.filter((e) => /deadlock/.test(e))).toEqual([])
      expect(migrated).toBeDefined()
      await migrated?.close()
      expect(await sql(url, 'SELECT version FROM relay_schema')).toEqual([{ version: 12 }])
    } finally {
      stop = true
      await Promise.all(work)
      await busy.close()
    }
    expect(failures.filter((e) => /deadlock/.test(e))).toEqual([])
  }, 60_000)
})

describe('PostgreSQL: the lane locks', () => {
  it('a lane has one owner: another relay, of this version or an older one, cannot lease it; an older relay settling runs alone', () =>
    withOtherSession('locks', async (q, other, url) => {
      await q.enqueue([event(1), event(2), event(3)])
      const jobs = await q.lease('p1', 2, 60_000, T0 + 10)
      expect(jobs.map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
      // The owner's claim is the key an older relay takes for each lease: such a lease waits (here given up).
      expect((await other.query(`SELECT pg_try_advisory_lock(${lockKey('leasing:p1')}) AS ok`)).rows).toEqual([
        { ok: false }
      ])
      await other.query("SET lock_timeout = '200ms'")
      await expect(other.query(`BEGIN; SELECT pg_advisory_xact_lock(${lockKey('leasing:p1')})`)).rejects.toThrow(
        /lock timeout/
      )
      await other.query('ROLLBACK')
      // A second queue on the database (another relay) leases nothing of the lane while q owns it.
      const second = await PgQueue.open(url, FAKE_TIME)
      try {
        expect(await second.lease('p1', 10, 60_000, T0 + 20)).toEqual([])
      } finally {
        await second.close()
      }
      await q.complete([jobs[0]!])
      expect((await q.stats(T0 + 20)).leased).toBe(1)
      expect((await q.lease('p1', 10, 60_000, T0 + 20)).map((j) => j.messageId)).toEqual(['m-3'])
      // An older relay leases and settles holding the lane lock alone: a settle waits for it.
      await other.query('SET lock_timeout = 0')
      await other.query(`BEGIN; SELECT pg_advisory_xact_lock(${lockKey('lease:p1')})`)
      let settled = false
      const settling = q.complete([jobs[1]!]).then(() => (settled = true))
      expect(await waitsForLock(url, () => settled)).toBe(true)
      expect(settled).toBe(false)
      await other.query('COMMIT')
      await settling
      expect((await q.stats(T0 + 30)).leased).toBe(1)
    }))

  it('a settle PostgreSQL ends to break a deadlock is run again, and the user it frees is not left held', () =>
    withOtherSession('deadlock', async (q, other, url) => {
      await q.enqueue([event(1, { userKey: 'u' }), event(2, { userKey: 'u' })])
      const [first] = await q.lease('p1', 1, 60_000, T0 + 10)
      // The next lease parks u's second event behind the first.
      expect(await q.lease('p1', 10, 60_000, T0 + 10)).toEqual([])
      const [held] = await sql(url, "SELECT id FROM relay_events WHERE state = 'held'")
      // Another session holds the held row; the settle deletes its event, then waits for that row to free it.
      // The other session then wants the settled event's row: a deadlock, which the settle's session (the one
      // waiting longer, with the shorter deadlock_timeout) breaks by ending its own transaction.
      await other.query('BEGIN')
      await other.query("SET LOCAL deadlock_timeout = '10s'")
      await other.query('UPDATE relay_events SET attempts = attempts WHERE id = $1', [held!.id])
      let settled = false
      const settling = q.complete([first!]).then(() => (settled = true))
      // The settle waits for the row the other session holds.
      expect(await waitsForLock(url, () => settled)).toBe(true)
      await other.query('UPDATE relay_events SET attempts = attempts WHERE id = $1', [first!.id])
      await other.query('COMMIT')
      await settling
      expect(await sql(url, 'SELECT id, state FROM relay_events')).toEqual([{ id: held!.id, state: 'pending' }])
      expect((await q.lease('p1', 10, 60_000, T0 + 20)).map((j) => j.messageId)).toEqual(['m-2'])
    }))
})

describe('PostgreSQL: plans of the delivery path', () => {
  it('a lease finds its events by primary key, also in a queue PostgreSQL has not analyzed yet (a first burst)', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `plans_${process.pid}`)
    const q = await PgQueue.open(url, FAKE_TIME)
    // Autovacuum must not analyze the table while the test looks at plans made without statistics.
    await sql(url, 'ALTER TABLE relay_events SET (autovacuum_enabled = false)')
    try {
      // Ingest writes the inbox; the events table holds what waits outside it (retries, parked users).
      await sql(
        url,
        `INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at)
         SELECT 'm-' || g, 'web', 'p1', 'u-' || (g % 300), '{}', ${T0} + g, ${T0} + g FROM generate_series(1, 20000) g`
      )
      const { default: pg } = await import('pg')
      const c = new pg.Client(url)
      await c.connect()
      try {
        const [stats] = (
          await c.query("SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relname = 'relay_events'")
        ).rows
        expect(stats).toEqual({ last_analyze: null, last_autoanalyze: null })
        const ids = (await c.query('SELECT id FROM relay_events ORDER BY id LIMIT 500')).rows.map((r) => r.id)
        const plan = async (begin: string) => {
          await c.query(begin)
          try {
            const { rows } = await c.query(`EXPLAIN ${LEASE_TAKE}`, [ids, T0, 1])
            return rows.map((r) => String(r['QUERY PLAN'])).join('\n')
          } finally {
            await c.query('ROLLBACK')
          }
        }
        // What the planner picks on its own for a table without statistics: not the primary key.
        expect(await plan('BEGIN')).not.toContain('relay_events_pkey')
        expect(await plan(BEGIN_INDEXED)).toMatch(/^\s*->\s+Index Scan using relay_events_pkey/m)
        // The candidates and their users' states: the waiting index in id order, one seek per user in each state's
        // partial index, never a scan of the table.
        await c.query(BEGIN_INDEXED)
        try {
          const { rows } = await c.query(`EXPLAIN ${LEASE_CANDIDATES}`, ['p1', T0 + 100_000, 500])
          const candidates = rows.map((r) => String(r['QUERY PLAN'])).join('\n')
          for (const index of [
            'relay_events_waiting',
            'relay_events_inflight',
            'relay_events_later',
            'relay_events_held'
          ])
            expect(candidates).toContain(index)
          expect(candidates).not.toMatch(/Seq Scan|Bitmap Heap Scan on relay_events /)
        } finally {
          await c.query('ROLLBACK')
        }
      } finally {
        await c.end()
      }
    } finally {
      await q.close()
    }
  })

  it('the oldest age is index seeks, also for a lane with nothing in flight in a table of dead letters', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `plans_oldest_${process.pid}`)
    await (await PgQueue.open(url, FAKE_TIME)).close()
    await sql(
      url,
      `INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state, dead_at, dead_reason)
       SELECT 'd-' || g, 'web', 'p0', 'u', '{}', ${T0}, ${T0}, 'dead', ${T0}, 'x' FROM generate_series(1, 50000) g;
       INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state, lease_until, lease_token)
       SELECT 'l-' || g, 'web', 'p0', 'u-' || g, '{}', ${T0} + g, ${T0} + g, 'leased', ${T0} + 60000, 1 FROM generate_series(1, 2000) g;
       INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at)
       SELECT 'm-' || g, 'web', 'p' || (g % 2), 'u-' || g, '{}', ${T0} + g, ${T0} + g FROM generate_series(1, 20000) g;
       ANALYZE relay_events`
    )
    // p1 has nothing in flight: by id, its leased subquery would walk every row before giving up.
    const [explained] = await sql(
      url,
      `EXPLAIN (ANALYZE, FORMAT JSON) ${OLDEST.replace('$1::text[]', "ARRAY['p0', 'p1']")}`
    )
    const rowsRead = (node: Record<string, unknown>): number =>
      Number(node['Actual Rows'] ?? 0) * Number(node['Actual Loops'] ?? 1) +
      Number(node['Rows Removed by Filter'] ?? 0) +
      ((node.Plans as Array<Record<string, unknown>> | undefined) ?? []).reduce((sum, p) => sum + rowsRead(p), 0)
    const plan = (explained!['QUERY PLAN'] as Array<{ Plan: Record<string, unknown> }>)[0]!.Plan
    // A walk of the primary key reads the 72,000 rows; the seeks read p0's 2,000 rows in flight and a few more.
    expect(rowsRead(plan)).toBeLessThan(5_000)
  })

  it('a lease leaves alone an event a tool dead-lettered between its choosing and its writing', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `plans_bare_${process.pid}`)
    const q = await PgQueue.open(url, FAKE_TIME)
    try {
      await sql(
        url,
        `INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at)
         VALUES ('m-1', 'web', 'p1', 'u', '{}', ${T0}, ${T0}), ('m-2', 'web', 'p1', 'u', '{}', ${T0}, ${T0})`
      )
      const [a, b] = (await sql(url, 'SELECT id FROM relay_events ORDER BY id')).map((r) => Number(r.id))
      // What the lease chose is now a dead letter (a bare id: no lease, no lane lock).
      await q.deadLetter([a as number, b as number], { reason: 'operator' }, T0)
      const { default: pg } = await import('pg')
      const c = new pg.Client(url)
      await c.connect()
      try {
        expect((await c.query(LEASE_TAKE, [[a], T0 + 60_000, 7])).rowCount).toBe(0)
        expect((await c.query(LEASE_HOLD, [[b]])).rowCount).toBe(0)
      } finally {
        await c.end()
      }
      expect((await q.listDead()).map((d) => d.id)).toEqual([a, b])
      const { bytes: _bytes, ...counted } = await q.stats(T0)
      expect(counted).toEqual(await q.scanStats(T0))
    } finally {
      await q.close()
    }
  })
})

describe('PostgreSQL: lane owners', () => {
  leaseProperty({ ...pgQueues('lease_property', FAKE_TIME), numRuns: 60 })

  it('reads the inbox in commit order: a row committed late is delivered, before rows of requests that overlapped it', () =>
    withOtherSession('inbox_order', async (q, slow) => {
      await q.enqueue([event(1, { userKey: 'u' })])
      // Another relay's ingest commit takes its row id, then is slow to commit.
      await slow.query('BEGIN')
      await slow.query(
        'INSERT INTO relay_inbox (project_id, events, left_events, received_at, body) VALUES ($1, 1, 1, $2, $3)',
        ['p1', T0 + 2, packInbox([['m-late', 'web', 'u', '{"late":true}', T0 + 2]])]
      )
      await q.enqueue([event(3, { userKey: 'u' })])
      const first = await q.lease('p1', 10, 60_000, T0 + 10)
      expect(first.map((j) => j.messageId)).toEqual(['m-1'])
      await q.complete(first)
      // Nothing after a transaction still open is read (it may commit rows before them)...
      expect(await q.lease('p1', 10, 60_000, T0 + 10)).toEqual([])
      await slow.query('COMMIT')
      // ...and once it ends, its row comes first: none is skipped.
      const rest: string[] = []
      for (let i = 0; i < 3 && rest.length < 2; i++) {
        const jobs = await q.lease('p1', 10, 60_000, T0 + 20)
        rest.push(...jobs.map((j) => j.messageId))
        await q.complete(jobs)
      }
      expect(rest).toEqual(['m-late', 'm-3'])
      expect(await q.stats(T0 + 30)).toMatchObject({ pending: 0, leased: 0 })
    }))

  it('says when delivery waits for a write transaction left open in another database of the server, and when it ends', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `held_back_${process.pid}`)
    const other = await createDatabase(inject('pgAdminUrl'), `held_back_other_${process.pid}`)
    const q = await PgQueue.open(url, FAKE_TIME)
    const { default: pg } = await import('pg')
    const app = new pg.Client({ connectionString: other, application_name: 'an analytics job' })
    await app.connect()
    try {
      await app.query('CREATE TABLE t (n int)')
      await app.query('BEGIN')
      await app.query('INSERT INTO t VALUES (1)')
      await q.enqueue([event(1)])
      expect(await q.lease('p1', 10, 60_000, T0 + 10)).toEqual([])
      // One look is not enough (a relay's own transaction may be that one); two, 5 s apart, are.
      expect(q.deliveryHeldBack()).toBeUndefined()
      await sleep(5_100)
      expect(await q.lease('p1', 10, 60_000, T0 + 10)).toEqual([])
      expect(q.deliveryHeldBack()).toMatch(/write transaction left open.*an analytics job/)
      await app.query('COMMIT')
      const jobs = await q.lease('p1', 10, 60_000, T0 + 20)
      expect(jobs.map((j) => j.messageId)).toEqual(['m-1'])
      expect(q.deliveryHeldBack()).toBeUndefined()
    } finally {
      await app.end()
      await q.close()
    }
  })

  it('orders inbox rows by transaction id as a number (9 before 10), and skips none across reads', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `inbox_xids_${process.pid}`)
    const q = await PgQueue.open(url, FAKE_TIME)
    try {
      // Rows of long-finished transactions, written out of id order: 40 rows (more than one read) of transaction 10,
      // then 40 of transaction 9. As text, '10' sorts before '9'.
      const rows = [
        ...Array.from({ length: 40 }, (_, i) => ['10', `m-10-${i}`]),
        ...Array.from({ length: 40 }, (_, i) => ['9', `m-9-${i}`])
      ]
      for (const [xid, id] of rows)
        await sql(
          url,
          `INSERT INTO relay_inbox (project_id, xid, events, left_events, received_at, body)
           VALUES ('p1', '${xid}', 1, 1, ${T0}, '${packInbox([[id as string, 'web', 'u', '{}', T0]])}')`
        )
      const order: string[] = []
      for (let i = 0; i < 100 && order.length < rows.length; i++) {
        const jobs = await q.lease('p1', 500, 60_000, T0 + 10)
        order.push(...jobs.map((j) => j.messageId))
        await q.complete(jobs)
      }
      expect(order).toEqual([...rows.slice(40), ...rows.slice(0, 40)].map(([, id]) => id))
    } finally {
      await q.close()
    }
  })

  it('a settle named flying events a lease then moved to the events table (their user came again): it applies there', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `moved_${process.pid}`)
    const q = await PgQueue.open(url, FAKE_TIME)
    try {
      await q.enqueue([event(1, { userKey: 'u' })])
      await q.enqueue([event(2, { userKey: 'u' })])
      const first = await q.lease('p1', 1, 60_000, T0 + 10)
      expect(first.map((j) => j.messageId)).toEqual(['m-1'])
      // The next lease finds u in flight: m-1 moves to the events table (still leased), m-2 is parked behind it.
      // The settle of m-1, called meanwhile, waits for that lease and then finds m-1 there.
      const [second, renewed] = await Promise.all([
        q.lease('p1', 10, 60_000, T0 + 10),
        q.renew(first, T0 + 90_000),
        q.complete(first)
      ])
      expect(second).toEqual([])
      expect(renewed).toEqual([first[0]!.id])
      expect(await sql(url, 'SELECT message_id, state FROM relay_events ORDER BY id')).toEqual([
        { message_id: 'm-2', state: 'pending' }
      ])
      const rest = await q.lease('p1', 10, 60_000, T0 + 20)
      expect(rest.map((j) => j.messageId)).toEqual(['m-2'])
      await q.complete(rest)
      expect(await q.stats(T0 + 30)).toMatchObject({ pending: 0, leased: 0 })
    } finally {
      await q.close()
    }
  })

  it('a lane taken over: the old owner’s settles and renewals change nothing, and the new owner delivers everything', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `takeover_${process.pid}`)
    const a = await PgQueue.open(url, FAKE_TIME)
    const b = await PgQueue.open(url, FAKE_TIME)
    try {
      await a.enqueue([1, 2, 3, 4].map((i) => event(i, { userKey: `u-${i % 2}` })))
      const flying = await a.lease('p1', 2, 60_000, T0 + 10)
      expect(flying.map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
      // b cannot lease the lane while a owns it.
      expect(await b.lease('p1', 10, 60_000, T0 + 10)).toEqual([])
      // a loses its claim (its session ended: a crash, or frozen past idle_session_timeout); b takes the lane.
      await endClaim(url, 'p1', a)
      let taken: Awaited<ReturnType<PgQueue['lease']>> = []
      for (let i = 0; i < 40 && taken.length === 0; i++) {
        await sleep(100)
        taken = await b.lease('p1', 2, 60_000, T0 + 20)
      }
      expect(taken.map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
      // a, late: its renewal finds nothing held, and its settles write nothing.
      expect(await a.renew(flying, T0 + 120_000)).toEqual([])
      await a.retry(flying, T0 + 30, 'late', T0 + 20)
      await a.deadLetter(flying, { reason: 'late' }, T0 + 20)
      expect(await sql(url, 'SELECT count(*)::int AS n FROM relay_events')).toEqual([{ n: 0 }])
      await b.complete(taken)
      const rest = await b.lease('p1', 10, 60_000, T0 + 30)
      expect(rest.map((j) => j.messageId)).toEqual(['m-3', 'm-4'])
      await b.complete(rest)
      expect(await b.stats(T0 + 40)).toMatchObject({ pending: 0, leased: 0, dead: 0 })
      expect(await sql(url, 'SELECT count(*)::int AS n FROM relay_inbox')).toEqual([{ n: 0 }])
    } finally {
      await Promise.all([a.close(), b.close()])
    }
  })

  it('a pause 1Flow asked for is the lane’s: its next owner leases nothing before it ends, whoever heard it, and it is never shortened', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `pause_${process.pid}`)
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => PgQueue.open(url, FAKE_TIME)))
    try {
      await a!.enqueue([1, 2, 3, 4].map((i) => event(i, { userKey: `u-${i % 2}` })))
      const first = await a!.lease('p1', 1, 60_000, T0 + 10)
      expect(first.map((j) => j.messageId)).toEqual(['m-1'])
      // 1Flow answers a's request with Retry-After: 60 (the deliverer pauses the lane and retries m-1 after it).
      await a!.pauseLane('p1', T0 + 60_000)
      await a!.retry(first, T0 + 60_000, '429', T0 + 20)
      expect(await a!.lease('p1', 10, 60_000, T0 + 20)).toEqual([])
      // a dies; b takes the lane over, and leases nothing while the pause lasts.
      await endClaim(url, 'p1', a!)
      const epoch = async () => Number((await sql(url, 'SELECT epoch FROM relay_lanes'))[0]?.epoch)
      for (let i = 0; i < 40 && (await epoch()) < 2; i++) {
        await sleep(100)
        expect(await b!.lease('p1', 10, 60_000, T0 + 30)).toEqual([])
      }
      expect(await epoch()).toBe(2)
      // c, not the owner, heard a shorter pause (a request of its own that was late): it shortens nothing.
      await c!.pauseLane('p1', T0 + 40_000)
      expect(await b!.lease('p1', 10, 60_000, T0 + 59_000)).toEqual([])
      // (Nor for the owner after b: what it would read.)
      expect(await sql(url, 'SELECT paused_until::float8 AS until FROM relay_lanes')).toEqual([{ until: T0 + 60_000 }])
      // A longer one lengthens it, for the owner too (which looks at its lane again within a second).
      await c!.pauseLane('p1', T0 + 90_000)
      await sleep(1_100)
      expect(await b!.lease('p1', 10, 60_000, T0 + 61_000)).toEqual([])
      // Then the retry first, and the inbox after it.
      expect((await b!.lease('p1', 10, 60_000, T0 + 90_000)).map((j) => j.messageId)).toEqual(['m-1'])
      expect((await b!.lease('p1', 10, 60_000, T0 + 90_000)).map((j) => j.messageId)).toEqual(['m-2', 'm-4'])
    } finally {
      await Promise.all([a!.close(), b!.close(), c!.close()])
    }
  })

  it('a pause heard by a relay whose clock runs a day ahead lasts at most the longest pause 1Flow may ask for', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `pause_skew_${process.pid}`)
    // Today's timeline and the default clock tolerance (60 s), as a deployment runs.
    const [owner, skewed] = await Promise.all([PgQueue.open(url, { buckets: 1 }), PgQueue.open(url, { buckets: 1 })])
    try {
      const now = Date.now()
      await owner.enqueue([event(1, { receivedAt: now }), event(2, { receivedAt: now })])
      await owner.release(await owner.lease('p1', 1, 60_000, now), now)
      // The skewed relay heard Retry-After: 300 at what its clock calls now: a day from now.
      await skewed.pauseLane('p1', now + 86_400_000 + 300_000)
      const [row] = await sql(url, 'SELECT paused_until::float8 AS until FROM relay_lanes')
      expect(Number(row!.until) - Date.now()).toBeLessThanOrEqual(300_000 + 60_000)
      // The owner (its lane looked at again within a second) leases nothing meanwhile, and everything after.
      await sleep(1_100)
      expect(await owner.lease('p1', 10, 60_000, Date.now() + 1_000)).toEqual([])
      const later = Date.now() + 361_000
      expect((await owner.lease('p1', 10, 60_000, later)).map((j) => j.messageId)).toEqual(['m-1'])
    } finally {
      await Promise.all([owner.close(), skewed.close()])
    }
  })

  it('held events are made ready a bounded step per statement, however many one user has parked behind a retry; the user’s events then arrive in order', () =>
    withOtherSession('held_steps', async (a, other) => {
      // Every statement's count of rows going from held to pending, as the database saw it.
      await other.query(`
        CREATE TABLE unheld_log (n INTEGER NOT NULL);
        CREATE FUNCTION unheld_log() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO unheld_log SELECT count(*) FROM old_rows o JOIN new_rows n USING (id) WHERE o.state = 'held' AND n.state = 'pending';
          RETURN NULL;
        END $$;
        CREATE TRIGGER unheld_log AFTER UPDATE ON relay_events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
          FOR EACH STATEMENT EXECUTE FUNCTION unheld_log()`)
      await a.enqueue([event(1, { userKey: 'u' })])
      await a.retry(await a.lease('p1', 1, 60_000, T0 + 10), T0 + 100, 'failed once', T0 + 10)
      const blocker = await a.lease('p1', 10, 60_000, T0 + 200)
      expect(blocker.map((j) => j.messageId)).toEqual(['m-1'])
      // 5,000 of the user's later events parked behind it.
      await other.query(
        `INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state)
         SELECT 'h-' || g, 'web', 'p1', 'u', '{}', ${T0} + 1000 + g, ${T0} + 1000 + g, 'held' FROM generate_series(1, 5000) g`
      )
      await a.complete(blocker)
      const delivered: string[] = []
      for (let i = 0; i < 100 && delivered.length < 5000; i++) {
        const jobs = await a.lease('p1', 500, 60_000, T0 + 300)
        delivered.push(...jobs.map((j) => j.messageId))
        await a.complete(jobs)
      }
      expect(delivered).toEqual(Array.from({ length: 5000 }, (_, i) => `h-${i + 1}`))
      const { rows } = await other.query('SELECT max(n)::int AS most, sum(n)::int AS total FROM unheld_log')
      expect(rows[0]).toEqual({ most: 2000, total: 5000 })
    }))

  it('a takeover is one short transaction whatever is parked behind the users it frees: they are freed after, each in order', () =>
    withOtherSession('takeover_short', async (a, other, url) => {
      const b = await PgQueue.open(url, { ...FAKE_TIME, timeoutMs: 2_000 })
      try {
        await a.enqueue([event(1, { userKey: 'w' })])
        expect((await a.lease('p1', 1, 60_000, T0 + 10)).map((j) => j.messageId)).toEqual(['m-1'])
        // Users a had parked in relay_events behind events it had in flight: 5,000 held events of 3 users.
        await other.query(
          `INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state)
           SELECT 'h-' || g, 'web', 'p1', 'u-' || (g % 3), '{}', ${T0} + g, ${T0} + g, 'held' FROM generate_series(1, 5000) g`
        )
        // A statement elsewhere holds the oldest of them (as a slow one would): freeing them has to wait for it.
        await other.query('BEGIN')
        await other.query("SELECT 1 FROM relay_events WHERE message_id = 'h-1' FOR UPDATE")
        // a dies: b takes the lane over all the same (the takeover frees nobody itself), and delivers what it can: m-1.
        await endClaim(url, 'p1', a)
        const epoch = async () => Number((await sql(url, 'SELECT epoch FROM relay_lanes'))[0]?.epoch)
        const delivered: string[] = []
        for (let i = 0; i < 20 && (await epoch()) < 2; i++) {
          await sleep(100)
          const jobs = await b.lease('p1', 500, 60_000, T0 + 20)
          delivered.push(...jobs.map((j) => j.messageId))
          await b.complete(jobs)
        }
        expect(await epoch()).toBe(2)
        expect(delivered).toEqual(['m-1'])
        await other.query('ROLLBACK')
        // Then the held users: each user's events in the order they came.
        for (let i = 0; i < 100 && delivered.length < 5001; i++) {
          const jobs = await b.lease('p1', 500, 60_000, T0 + 30)
          delivered.push(...jobs.map((j) => j.messageId))
          await b.complete(jobs)
        }
        expect(delivered.length).toBe(5001)
        expect(new Set(delivered).size).toBe(5001)
        for (let u = 0; u < 3; u++) {
          const mine = delivered
            .filter((id) => id.startsWith('h-') && Number(id.slice(2)) % 3 === u)
            .map((id) => Number(id.slice(2)))
          expect(mine).toEqual([...mine].sort((x, y) => x - y))
        }
      } finally {
        await other.query('ROLLBACK').catch(() => undefined)
        await b.close()
      }
    }))

  it('recovery is the owner’s: another relay takes nothing back and never waits on the lane’s lock; the takeover takes the leases back, and the next recovery says so', () =>
    withOtherSession('recovery_owner', async (a, locker, url) => {
      // (b's statement timeout is short: one of its recoveries below is made to fail on it.)
      const b = await PgQueue.open(url, { ...FAKE_TIME, timeoutMs: 1_000 })
      const leasedRows = () => sql(url, "SELECT count(*)::int AS n FROM relay_events WHERE state = 'leased'")
      try {
        await a.enqueue([1, 2, 3, 4].map((i) => event(i, { userKey: `u-${i % 2}` })))
        // Two events of a's leased from relay_events (released there, leased again), their lease ended by T0 + 1020.
        await a.release(await a.lease('p1', 2, 60_000, T0 + 10), T0 + 10)
        const leased = await a.lease('p1', 2, 1_000, T0 + 20)
        expect(leased.map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
        // Someone holds the lane's lock (a slow write of the owner, a frozen relay's transaction): b's recovery, long
        // after the lease ended, neither waits for it (it would fail on the statement timeout) nor takes anything back.
        await locker.query(`BEGIN; SELECT pg_advisory_xact_lock(${lockKey('lease:p1')})`)
        expect(await b.recoverLeases(T0 + 10_000_000)).toBe(0)
        await locker.query('COMMIT')
        expect(await leasedRows()).toEqual([{ n: 2 }])
        // a's claim ends (a crash): the lane is nobody's, and b's recovery still leaves it to the next owner.
        await endClaim(url, 'p1', a)
        await sleep(200)
        expect(await b.recoverLeases(T0 + 10_000_000)).toBe(0)
        expect(await leasedRows()).toEqual([{ n: 2 }])
        // b's lease takes the lane over (tried at most once a second), which takes a's leases back: b delivers all,
        // in order, and its next recovery counts the two it took back (a relay logs that).
        let first: Awaited<ReturnType<PgQueue['lease']>> = []
        for (let i = 0; i < 40 && first.length === 0; i++) {
          await sleep(100)
          first = await b.lease('p1', 2, 60_000, T0 + 30)
        }
        expect(first.map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
        // A recovery that fails (the table locked past b's statement timeout) loses none of that count.
        await locker.query('BEGIN; LOCK TABLE relay_events IN ACCESS EXCLUSIVE MODE')
        await expect(b.recoverLeases(T0 + 40)).rejects.toThrow(/timeout/)
        await locker.query('COMMIT')
        expect(await b.recoverLeases(T0 + 40)).toBe(2)
        await b.complete(first)
        const rest = await b.lease('p1', 10, 60_000, T0 + 50)
        expect(rest.map((j) => j.messageId)).toEqual(['m-3', 'm-4'])
        await b.complete(rest)
        expect(await b.stats(T0 + 60)).toMatchObject({ pending: 0, leased: 0 })
      } finally {
        await b.close()
      }
    }))

  it('names an advisory lock as pg_locks shows it, for negative keys too', () =>
    withOtherSession('lock_ids', async (_q, other) => {
      for (const key of [lockKey('lease:p1'), -5, -2_147_483_648, 2_147_483_647]) {
        await other.query('SELECT pg_advisory_lock($1::bigint)', [key])
        const { rows } = await other.query(
          "SELECT classid::bigint AS c, objid::bigint AS o FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        expect(rows.map((r: Record<string, string>) => [Number(r.c), Number(r.o)])).toEqual([advisoryLockId(key)])
        await other.query('SELECT pg_advisory_unlock_all()')
      }
    }))

  it('a takeover ends a frozen owner’s session stuck sending it a large result while holding the lane’s lock (no timeout of PostgreSQL’s ends it)', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `stuck_writer_${process.pid}`)
    const a = await PgQueue.open(url, FAKE_TIME)
    // b's statement timeout (1 s) is what it takes a session past it to be: stuck.
    const b = await PgQueue.open(url, { ...FAKE_TIME, timeoutMs: 1_000 })
    const { default: postgres } = await import('pg')
    // a's connection, frozen mid-lease: the lane lock held shared, a large result on its way, the client not reading.
    const frozen = new postgres.Client({ connectionString: url, statement_timeout: 1_000 })
    await frozen.connect()
    frozen.on('error', () => undefined)
    try {
      await a.enqueue([event(1, { userKey: 'x' }), event(2, { userKey: 'y' })])
      expect((await a.lease('p1', 1, 60_000, T0 + 10)).map((j) => j.messageId)).toEqual(['m-1'])
      const stuck = frozen
        .query(
          `BEGIN; SELECT pg_advisory_xact_lock_shared(${lockKey('lease:p1')}); SELECT repeat('x', 1000) FROM generate_series(1, 50000)`
        )
        .then(
          () => 'answered',
          (error: Error) => error.message
        )
      ;(frozen as unknown as { connection: { stream: { pause(): void } } }).connection.stream.pause()
      // a's claim ends (PostgreSQL's idle_session_timeout for a frozen relay); b leases, taking the lane over.
      await endClaim(url, 'p1', a)
      let taken: string[] = []
      for (let i = 0; i < 30 && taken.length === 0; i++) {
        await sleep(250)
        taken = (await b.lease('p1', 10, 60_000, T0 + 20).catch(() => [])).map((j) => j.messageId)
      }
      expect(taken).toEqual(['m-1', 'm-2'])
      // The stuck session was ended, not waited for: its statement never answered.
      expect(
        await sql(url, "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event = 'ClientWrite'")
      ).toEqual([{ n: 0 }])
      ;(frozen as unknown as { connection: { stream: { resume(): void } } }).connection.stream.resume()
      expect(await stuck).not.toBe('answered')
    } finally {
      await frozen.end().catch(() => undefined)
      await Promise.all([a.close(), b.close()])
    }
  })

  it('a lane whose leases are being renewed is in use: not let go as idle, nor taken over, while they are live', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `renewed_in_use_${process.pid}`)
    // a lets a lane go after 1 s without a lease (instead of a minute): its deliveries, renewed, keep it.
    const a = await PgQueue.open(url, { ...FAKE_TIME, ownedIdleMs: 1_000 })
    const b = await PgQueue.open(url, FAKE_TIME)
    try {
      await a.enqueue([event(1, { userKey: 'x' }), event(2, { userKey: 'x' })])
      await a.release(await a.lease('p1', 1, 60_000, T0 + 10), T0 + 10)
      // A lease from relay_events (a long delivery: no lease of the lane meanwhile, only renewals every 100 ms).
      const leased = await a.lease('p1', 1, 60_000, T0 + 20)
      expect(leased.map((j) => j.messageId)).toEqual(['m-1'])
      let stop = false
      const renewals: number[][] = []
      const renewing = (async () => {
        while (!stop) {
          renewals.push(await a.renew(leased, T0 + 120_000))
          await sleep(100)
        }
      })()
      // Meanwhile b tries to lease the lane, for several times a's idle limit.
      const tookByB: string[] = []
      for (const until = Date.now() + 4_500; Date.now() < until; await sleep(200))
        tookByB.push(...(await b.lease('p1', 10, 60_000, T0 + 30)).map((j) => j.messageId))
      stop = true
      await renewing
      expect(tookByB).toEqual([])
      expect(renewals.every((ids) => ids.length === 1 && ids[0] === leased[0]!.id)).toBe(true)
      await a.complete(leased)
      expect((await a.lease('p1', 10, 60_000, T0 + 40)).map((j) => j.messageId)).toEqual(['m-2'])
    } finally {
      await Promise.all([a.close(), b.close()])
    }
  })

  it('a lease under way when the claim ends hands out nothing, and leaves nothing in flight', () =>
    withOtherSession('lost_mid_lease', async (a, locker, url) => {
      let b: PgQueue | undefined
      try {
        await a.enqueue([event(0, { userKey: 'x' }), event(1, { userKey: 'y' }), event(2, { userKey: 'z' })])
        await a.complete(await a.lease('p1', 1, 30_000, T0 + 10))
        // Past the time a lease trusts what it knows: the next one asks the database, and waits here.
        await sleep(1_100)
        await locker.query('BEGIN; LOCK TABLE relay_lanes IN ACCESS EXCLUSIVE MODE')
        let settled = false
        const pending = a.lease('p1', 1, 30_000, T0 + 20).finally(() => (settled = true))
        expect(await waitsForLock(url, () => settled)).toBe(true)
        // Meanwhile its claim ends (the connection holding it is gone), and the relay hears of it.
        await endClaim(url, 'p1', a)
        await sleep(1_000)
        await locker.query('COMMIT')
        expect(await pending).toEqual([])
        b = await PgQueue.open(url, FAKE_TIME)
        let rest: string[] = []
        for (let i = 0; i < 40 && rest.length === 0; i++) {
          await sleep(100)
          const jobs = await b.lease('p1', 10, 30_000, T0 + 30)
          rest = jobs.map((j) => j.messageId)
          await b.complete(jobs)
        }
        expect(rest).toEqual(['m-1', 'm-2'])
        await a.recoverLeases(T0 + 10_000_000)
        expect(await a.stats(T0 + 40)).toMatchObject({ pending: 0, leased: 0 })
      } finally {
        await b?.close()
      }
    }))

  it('an owner whose epoch moved on (its claim lost, not yet noticed) writes nothing, and its renewals hold nothing', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `fenced_${process.pid}`)
    const q = await PgQueue.open(url, FAKE_TIME)
    try {
      await q.enqueue([1, 2, 3].map((i) => event(i, { userKey: 'u' })))
      const [job] = await q.lease('p1', 10, 60_000, T0 + 10)
      // What a takeover by another relay commits.
      await sql(url, "UPDATE relay_lanes SET epoch = epoch + 1 WHERE project_id = 'p1'")
      await q.retry([job!], T0 + 20, 'late', T0 + 10)
      expect(await sql(url, 'SELECT count(*)::int AS n FROM relay_events')).toEqual([{ n: 0 }])
      expect(await sql(url, 'SELECT left_events FROM relay_inbox')).toEqual([{ left_events: 3 }])
      expect(await q.renew([job!], T0 + 60_000)).toEqual([])
    } finally {
      await q.close()
    }
  })
})

describe('PostgreSQL: projects in buckets', () => {
  leaseProperty({ ...pgQueues('lease_buckets', IN_BUCKETS), numRuns: 40 })

  /** The relays' owner claims on the buckets of `project`: per claims session, how many. */
  const bucketClaims = async (url: string, project: string) => {
    const keys = lanesOf(project, 8).map((lane) => lockKey(`leasing:${lane}`) >>> 0)
    const rows = await sql(
      url,
      `SELECT pid, count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = ANY(ARRAY[${keys.join(',')}]::oid[]) GROUP BY pid`
    )
    return rows.map((r) => Number(r.n)).sort()
  }

  it.each([
    { who: 'all three deliver it', deliver: [0, 1, 2], claims: [2, 3, 3] },
    { who: 'two of three deliver it, the third other projects', deliver: [0, 1], claims: [4, 4] }
  ])(
    'relays share the buckets of a project ($who): each owns its share, every bucket is owned, every event delivered once, each user in order',
    async ({ deliver, claims }) => {
      const url = await createDatabase(inject('pgAdminUrl'), `buckets_share_${process.pid}_${n++}`)
      const relays = await Promise.all([0, 1, 2].map(() => PgQueue.open(url, IN_BUCKETS)))
      const mine = deliver.map((i) => relays[i]!)
      try {
        // Every relay delivers p0; some deliver p1 too. The first to lease p1 counts only itself and takes all eight
        // buckets, then (within a second) counts the others and lets go of those beyond its share, which they take.
        await Promise.all(relays.map((q) => q.lease('p0', 1, 60_000, T0)))
        await until(
          async () => {
            await Promise.all(mine.map((q) => q.lease('p1', 1, 60_000, T0)))
            return JSON.stringify(await bucketClaims(url, 'p1')) === JSON.stringify(claims)
          },
          `p1's buckets owned ${JSON.stringify(claims)}`,
          20_000
        )
        const users = 30
        await relays[2]!.enqueue(
          Array.from({ length: users * 10 }, (_, i) => event(i, { userKey: `u-${i % users}`, receivedAt: T0 }))
        )
        const leased: Array<{ relay: number; user: string; n: number }> = []
        let now = T0 + 10
        while (leased.length < users * 10 && now < T0 + 10_000) {
          now += 10
          await Promise.all(
            mine.map(async (q, relay) => {
              const jobs = await q.lease('p1', 20, 60_000, now)
              for (const j of jobs) leased.push({ relay, user: j.userKey, n: Number(j.messageId.slice(2)) })
              await q.complete(jobs)
            })
          )
        }
        expect(new Set(leased.map((l) => l.n)).size).toBe(users * 10)
        expect(leased).toHaveLength(users * 10)
        for (let u = 0; u < users; u++) {
          const ns = leased.filter((l) => l.user === `u-${u}`).map((l) => l.n)
          expect(ns).toEqual([...ns].sort((a, b) => a - b))
        }
        expect(new Set(leased.map((l) => l.relay)).size).toBe(deliver.length)
        expect(await bucketClaims(url, 'p1')).toEqual(claims)
        const { bytes: _bytes, ...counted } = await relays[2]!.stats(now)
        expect(counted).toMatchObject({ pending: 0, leased: 0, lanes: {} })
      } finally {
        await Promise.all(relays.map((q) => q.close()))
      }
    },
    60_000
  )

  it.each(['the inbox', 'relay_events (retries)'])(
    'a relay that comes later gets buckets only once nothing of them is in flight elsewhere (leased from %s): nothing is sent twice',
    async (from) => {
      const url = await createDatabase(inject('pgAdminUrl'), `buckets_handover_${process.pid}_${n++}`)
      const a = await PgQueue.open(url, IN_BUCKETS)
      let b: PgQueue | undefined
      try {
        const batch = (from: number) =>
          Array.from({ length: 40 }, (_, i) => event(from + i, { userKey: `u-${i}`, receivedAt: T0 }))
        await a.enqueue(batch(0))
        // Alone, a owns every bucket, and has the first event of each of the forty users in flight.
        let first = await a.lease('p1', 500, 60_000, T0 + 10)
        expect(first).toHaveLength(40)
        if (from !== 'the inbox') {
          // Sent, failed, and leased again from relay_events, where a retry waits.
          await a.retry(first, T0 + 15, '1Flow answered 503', T0 + 12)
          first = await a.lease('p1', 500, 60_000, T0 + 15)
          expect(first.map((j) => j.attempts)).toEqual(Array.from({ length: 40 }, () => 1))
        }
        expect(await bucketClaims(url, 'p1')).toEqual([8])
        await a.enqueue([...batch(40), ...batch(80)])
        b = await PgQueue.open(url, IN_BUCKETS)
        expect(await b.lease('p1', 500, 60_000, T0 + 20)).toEqual([])
        // a counts b (once a second) and gives up half of its buckets, but none while its events are in flight.
        await sleep(2_500)
        expect(await b.lease('p1', 500, 60_000, T0 + 30)).toEqual([])
        expect(await bucketClaims(url, 'p1')).toEqual([8])
        await a.complete(first)
        // a lets go of the buckets it yields (at its next look, within a second); b takes them (it tries each once a
        // second).
        await until(async () => JSON.stringify(await bucketClaims(url, 'p1')) === '[4]', 'a keeping four buckets')
        let second: Awaited<ReturnType<PgQueue['lease']>> = []
        await until(async () => (second = await b!.lease('p1', 500, 60_000, T0 + 40)).length > 0, 'b leasing')
        expect(await bucketClaims(url, 'p1')).toEqual([4, 4])
        // Nothing was taken back from a, and b sends nothing a sent.
        expect(await b.recoverLeases(T0 + 40)).toBe(0)
        const sent = new Set(first.map((j) => j.messageId))
        expect(second.filter((j) => sent.has(j.messageId))).toEqual([])
        const all = [...first, ...second]
        await b.complete(second)
        for (let now = T0 + 50; all.length < 120 && now < T0 + 5_000; now += 10)
          for (const q of [a, b]) {
            const jobs = await q.lease('p1', 500, 60_000, now)
            all.push(...jobs)
            await q.complete(jobs)
          }
        expect(all.map((j) => j.messageId).sort()).toEqual(Array.from({ length: 120 }, (_, i) => `m-${i}`).sort())
      } finally {
        await Promise.all([a.close(), b?.close()])
      }
    },
    60_000
  )

  it("a pause 1Flow asked for is the project's: the owner of every bucket waits for it, whoever heard it", async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `buckets_pause_${process.pid}`)
    const [owner, other] = await Promise.all([PgQueue.open(url, IN_BUCKETS), PgQueue.open(url, IN_BUCKETS)])
    try {
      // The owner has just leased from every bucket, twice: it looked at each one's state in relay_lanes a moment ago,
      // and looks again only a second later.
      const users = (from: number) => Array.from({ length: 20 }, (_, i) => event(from + i, { userKey: `u-${i}` }))
      await owner.enqueue(users(0))
      const first = await owner.lease('p1', 100, 60_000, T0 + 10)
      expect(first).toHaveLength(20)
      expect(await bucketClaims(url, 'p1')).toEqual([8])
      await owner.complete(first)
      expect(await owner.lease('p1', 100, 60_000, T0 + 20)).toEqual([])
      await owner.enqueue(users(100))
      // The other relay heard 429 with Retry-After (it owns none of the buckets).
      await other.pauseLane('p1', T0 + 10_000)
      // (A relay reads the project's pause at most every 50 ms.)
      await sleep(100)
      expect(await owner.lease('p1', 100, 60_000, T0 + 100)).toEqual([])
      expect(await owner.lease('p1', 100, 60_000, T0 + 9_999)).toEqual([])
      expect(await owner.lease('p1', 100, 60_000, T0 + 10_000)).toHaveLength(20)
    } finally {
      await Promise.all([owner.close(), other.close()])
    }
  })

  it("a damaged inbox row stops its bucket only: the project's other buckets are delivered, and the row is reported", async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `buckets_damaged_${process.pid}`)
    const q = await PgQueue.open(url, IN_BUCKETS)
    try {
      await q.enqueue(Array.from({ length: 40 }, (_, i) => event(i, { userKey: `u-${i}` })))
      const bad = laneOf('p1', 'u-0', 8)
      await sql(url, `UPDATE relay_inbox SET body = 'not an inbox row' WHERE project_id = '${bad}'`)
      const stuck = Array.from({ length: 40 }, (_, i) => i).filter((i) => laneOf('p1', `u-${i}`, 8) === bad)
      const delivered: string[] = []
      const errors: unknown[] = []
      for (let at = T0 + 10; errors.length === 0 && at < T0 + 200; at++) {
        try {
          const jobs = await q.lease('p1', 500, 60_000, at)
          delivered.push(...jobs.map((j) => j.messageId))
          await q.complete(jobs)
        } catch (error) {
          errors.push(error)
        }
        await sleep(20)
      }
      expect(delivered.sort()).toEqual(
        Array.from({ length: 40 }, (_, i) => i)
          .filter((i) => !stuck.includes(i))
          .map((i) => `m-${i}`)
          .sort()
      )
      // Said once nothing else is left to lease (the deliverer logs it and tries again a second later).
      expect(errors[0]).toBeInstanceOf(InboxRowError)
      expect(String(errors[0])).toContain(bad)
    } finally {
      await q.close()
    }
  })

  it('a queue keeps the buckets it was created with; one upgraded from before buckets keeps one per project', async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `buckets_setting_${process.pid}`)
    const q = await PgQueue.open(url, { ...IN_BUCKETS, buckets: 4 })
    expect(q.buckets).toBe(4)
    await q.enqueue([event(1, { userKey: 'alice' }), event(2, { userKey: 'bob', deadReason: 'refused at ingest' })])
    // Outside the queue, each of its lanes is the project.
    expect((await q.stats(T0 + 10)).lanes).toEqual({ p1: 1 })
    expect((await q.listDead()).map((d) => d.projectId)).toEqual(['p1'])
    // A relay of a version before buckets would write a project's events to the project's own lane: refused, as a
    // database not ready for it (503 to its clients, who send them again), not as a bad request.
    for (const insert of [
      "INSERT INTO relay_inbox (project_id, events, left_events, received_at, body) VALUES ('p1', 1, 1, 0, '')",
      "INSERT INTO relay_events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state) VALUES ('old', 'web', 'p1', 'u', '{}', 0, 0, 'pending')"
    ])
      await expect(sql(url, insert)).rejects.toMatchObject({
        code: '55000',
        message: expect.stringMatching(/before them wrote an event to lane p1 .*upgrade every relay/)
      })
    await q.close()
    const again = await PgQueue.open(url, IN_BUCKETS)
    expect(again.buckets).toBe(4)
    const leased = await again.lease('p1', 10, 60_000, T0 + 20)
    expect(leased.map((j) => j.messageId)).toEqual(['m-1'])
    await again.complete(leased)
    await again.close()
    // A queue of schema 10 (before buckets), with events in its project's one lane.
    await sql(
      url,
      `DROP TABLE relay_settings; UPDATE relay_schema SET version = 10;
       DROP TRIGGER relay_inbox_bucketed ON relay_inbox; DROP TRIGGER relay_events_bucketed ON relay_events`
    )
    const upgraded = await PgQueue.open(url, IN_BUCKETS)
    try {
      expect(upgraded.buckets).toBe(1)
      await upgraded.enqueue([event(3, { userKey: 'carol' })])
      expect(await sql(url, 'SELECT project_id FROM relay_inbox')).toEqual([{ project_id: 'p1' }])
      await sql(url, "UPDATE relay_settings SET value = 'many'")
      await expect(PgQueue.open(url, IN_BUCKETS)).rejects.toThrow(/buckets = "many"/)
    } finally {
      await upgraded.close()
    }
  })
})

describe('PostgreSQL: a claim lost and taken back', () => {
  // A server of these tests' own: they crash it.
  let server: ThrowawayPostgres
  beforeAll(async () => {
    server = await startThrowawayPostgres()
  }, 60_000)
  afterAll(() => server?.stop())

  /** How many lanes `q` took back with what it had in flight after its claims' connection ended. */
  const reclaimed = (q: PgQueue) => ownersOf(q).reclaimed
  /**
   * After a restart, for 2 s, `other` (which owned none of the buckets) takes none of them: `leased` stays as it is.
   * Then `owner`'s next lease connects again and takes every bucket back with what it has in flight (so it leases
   * nothing of those users yet): `owned` of them.
   */
  const leftToOwner = async (owner: PgQueue, other: PgQueue, leased: Job[], owned: number) => {
    const before = leased.length
    const end = Date.now() + 2_000
    while (Date.now() < end) {
      leased.push(...(await other.lease('p1', 500, 60_000, T0 + 20).catch(() => [])))
      await sleep(100)
    }
    expect(leased).toHaveLength(before)
    expect(await owner.lease('p1', 500, 60_000, T0 + 20)).toEqual([])
    expect(reclaimed(owner)).toBe(owned)
  }
  const epochs = async (url: string) =>
    (await sql(url, "SELECT epoch FROM relay_lanes WHERE project_id LIKE 'p1#%' ORDER BY project_id")).map((r) =>
      Number(r.epoch)
    )

  it('an owner keeps what it has in flight across a PostgreSQL restart: nobody takes its buckets meanwhile, nothing is leased twice', async () => {
    const url = await createDatabase(server.url, `restart_kept_${process.pid}`)
    const a = await PgQueue.open(url, IN_BUCKETS)
    const b = await PgQueue.open(url, IN_BUCKETS)
    try {
      const batch = (from: number) =>
        Array.from({ length: 40 }, (_, i) => event(from + i, { userKey: `u-${i}`, receivedAt: T0 }))
      await a.enqueue(batch(0))
      // a owns every bucket, with the first event of each of the forty users in flight.
      const leased: Job[] = await a.lease('p1', 500, 60_000, T0 + 10)
      expect(leased).toHaveLength(40)
      const owned = (await epochs(url)).length
      expect(owned).toBe(8)
      // PostgreSQL crashes while those are with 1Flow, and comes back: every claim ended with its connection. a is
      // slow to connect again (its claims' pinger, which would within a second, is stopped: its next lease will).
      clearInterval(ownersOf(a).pinger)
      server.crash()
      await sleep(500)
      server.restart()
      // The buckets are left to a, which takes them back.
      await leftToOwner(a, b, leased, owned)
      expect(await epochs(url)).toEqual(Array.from({ length: owned }, () => 1))
      // 1Flow's answers are written, and delivery goes on from there: every event once, each user in order.
      await a.complete(leased.slice())
      await a.enqueue(batch(40))
      let now = T0 + 30
      while (leased.length < 80 && now < T0 + 20_000) {
        now += 10
        for (const q of [a, b]) {
          const jobs = await q.lease('p1', 500, 60_000, now)
          leased.push(...jobs)
          await q.complete(jobs)
        }
        await sleep(20)
      }
      expect(leased.map((j) => j.messageId).sort()).toEqual(Array.from({ length: 80 }, (_, i) => `m-${i}`).sort())
      for (let u = 0; u < 40; u++)
        expect(leased.filter((j) => j.userKey === `u-${u}`).map((j) => j.messageId)).toEqual([`m-${u}`, `m-${u + 40}`])
      expect(await a.stats(now)).toMatchObject({ pending: 0, leased: 0 })
    } finally {
      await Promise.all([a.close(), b.close()])
    }
  }, 60_000)

  it('a relay resumed after its buckets were taken over takes none of them back from their new owner across a restart', async () => {
    const url = await createDatabase(server.url, `restart_stale_${process.pid}`)
    const a = await PgQueue.open(url, IN_BUCKETS)
    const b = await PgQueue.open(url, IN_BUCKETS)
    try {
      await a.enqueue(Array.from({ length: 40 }, (_, i) => event(i, { userKey: `u-${i}`, receivedAt: T0 })))
      expect(await a.lease('p1', 500, 60_000, T0 + 10)).toHaveLength(40)
      // a is frozen past its claims; b takes every bucket over, and has the forty events in flight itself.
      await endClaim(url, laneOf('p1', 'u-0', 8), a)
      let taken: Job[] = []
      await until(async () => (taken = [...taken, ...(await b.lease('p1', 500, 60_000, T0 + 20))]).length === 40, 'b')
      expect(await epochs(url)).toEqual(Array.from({ length: 8 }, () => 2))
      // PostgreSQL restarts; a, awake now, connects again before b does.
      clearInterval(ownersOf(b).pinger)
      server.crash()
      await sleep(500)
      server.restart()
      expect(await a.lease('p1', 500, 60_000, T0 + 30)).toEqual([])
      expect(reclaimed(a)).toBe(0)
      // b takes every bucket back, with what it has in flight; nothing moved.
      expect(await b.lease('p1', 500, 60_000, T0 + 30)).toEqual([])
      expect(reclaimed(b)).toBe(8)
      expect(await epochs(url)).toEqual(Array.from({ length: 8 }, () => 2))
      await b.complete(taken)
      expect(await b.stats(T0 + 40)).toMatchObject({ pending: 0, leased: 0 })
    } finally {
      await Promise.all([a.close(), b.close()])
    }
  }, 60_000)

  /** The outcome of `flying` being written: a retry (1Flow answered 503) or a delivered lease. */
  const outcome = (a: PgQueue, flying: Job[], delivered: boolean) =>
    delivered ? a.complete(flying) : a.retry(flying, T0 + 20, '1Flow answered 503', T0 + 15)
  /** Leases and completes `p1` until nothing is left: the ids leased, in order. */
  const drain = async (a: PgQueue) => {
    const out: string[] = []
    for (let now = T0 + 30; now < T0 + 1_000; now += 10) {
      const jobs = await a.lease('p1', 10, 60_000, now)
      out.push(...jobs.map((j) => j.messageId))
      await a.complete(jobs)
      if (jobs.length === 0 && (await a.stats(now)).pending === 0) break
    }
    return out
  }
  /**
   * Enqueues four events of two users, leases the first two, makes the write `slow` (a trigger) and starts writing
   * their outcome: once PostgreSQL is in the middle of it, the error it ends with (or undefined), when it ends.
   */
  const slowWrite = async (a: PgQueue, url: string, slow: string, delivered: boolean, seconds = 1) => {
    await a.enqueue([1, 2, 3, 4].map((i) => event(i, { userKey: `u-${i % 2}` })))
    const flying = await a.lease('p1', 2, 60_000, T0 + 10)
    expect(flying.map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
    await sql(url, `${SLOW.replace('pg_sleep(1)', `pg_sleep(${seconds})`)} ${slow}`)
    const written = outcome(a, flying, delivered).then(
      () => undefined,
      (error: unknown) => error
    )
    await until(
      async () => (await sql(url, "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'")).length > 0,
      'the write under way'
    )
    return { flying, written }
  }
  /** A trigger function that sleeps 1 s (made slow, a write is cut off in the middle). */
  const SLOW = `CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$;`
  const slowCommit = `CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON relay_events DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION slow()`
  const slowMarks = 'CREATE TRIGGER slow BEFORE UPDATE ON relay_inbox FOR EACH ROW EXECUTE FUNCTION slow()'

  it.each([
    // A deferred trigger runs in COMMIT: the relay waits for its answer, not knowing whether it commits.
    { when: 'in its COMMIT', delivered: false, slow: slowCommit },
    { when: 'in a one-round-trip write', delivered: true, slow: slowMarks },
    // The insert itself is slow: the transaction never reached COMMIT (not even in doubt).
    {
      when: 'before its COMMIT',
      delivered: false,
      slow: 'CREATE TRIGGER slow BEFORE INSERT ON relay_events FOR EACH ROW EXECUTE FUNCTION slow()'
    }
  ])(
    'an owner whose write PostgreSQL crashed $when finds it did not commit, and takes its lane back as it was',
    async ({ delivered, slow }) => {
      const url = await createDatabase(server.url, `restart_doubt_${process.pid}_${n++}`)
      const a = await PgQueue.open(url, FAKE_TIME)
      try {
        const { flying, written } = await slowWrite(a, url, slow, delivered)
        server.crash()
        expect(await written).toBeInstanceOf(Error)
        server.restart()
        await sql(url, `DROP TRIGGER slow ON ${slow === slowMarks ? 'relay_inbox' : 'relay_events'}`)
        // a takes its lane back (within a second, on its next connection), having read back that the write did not
        // commit: nothing was taken over, and the outcome is written now, as the deliverer does once the queue works.
        await until(() => reclaimed(a) === 1, 'a taking its lane back')
        expect(await sql(url, 'SELECT epoch::int FROM relay_lanes')).toEqual([{ epoch: 1 }])
        await outcome(a, flying, delivered)
        expect(await drain(a)).toEqual(delivered ? ['m-3', 'm-4'] : ['m-1', 'm-2', 'm-3', 'm-4'])
      } finally {
        await a.close()
      }
    },
    60_000
  )

  it.each([
    { what: 'a retry', delivered: false, slow: slowCommit, cut: 'after it committed', seconds: 1 },
    { what: 'a delivered lease', delivered: true, slow: slowMarks, cut: 'after it committed', seconds: 1 },
    // The server goes on committing after the relay lost the connection: read back too early, the write would look
    // as if it had not committed, and be written twice.
    { what: 'a retry', delivered: false, slow: slowCommit, cut: 'while it was committing', seconds: 3 }
  ])(
    'an owner whose write of $what committed but whose answer was lost ($cut) takes its lane over afresh: nothing twice in the tables',
    async ({ delivered, slow, cut, seconds }) => {
      const url = await createDatabase(server.url, `restart_lost_answer_${process.pid}_${n++}`)
      // The relay reaches PostgreSQL through a proxy that can stop forwarding, then cut every connection.
      const proxy = await FreezableProxy.start(Number(new URL(url).port))
      const through = new URL(url)
      through.port = String(proxy.port)
      const a = await PgQueue.open(through.toString(), FAKE_TIME)
      const afresh = () => ownersOf(a).takenAfresh
      try {
        const { written } = await slowWrite(a, url, slow, delivered, seconds)
        // Its answer never reaches the relay: the connections are cut, once the write committed or while it commits.
        proxy.freeze()
        if (cut === 'after it committed')
          await until(
            async () => (await sql(url, "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'")).length === 0,
            'the write committed'
          )
        proxy.thaw()
        expect(mayHaveCommitted(await written)).toBe(true)
        await sql(url, `DROP TRIGGER slow ON ${delivered ? 'relay_inbox' : 'relay_events'}`)
        // a reads back that the write committed: memory is behind the tables, so it takes its lane over itself.
        await until(
          async () => (await sql(url, 'SELECT epoch::int FROM relay_lanes'))[0]?.epoch === 2,
          'a taking its lane over afresh'
        )
        expect([afresh(), reclaimed(a)]).toEqual([1, 0])
        // The retry was written once (two rows, not four), and a delivered lease is not delivered again.
        expect(await sql(url, 'SELECT count(*)::int AS n FROM relay_events')).toEqual([{ n: delivered ? 0 : 2 }])
        expect(await drain(a)).toEqual(delivered ? ['m-3', 'm-4'] : ['m-1', 'm-2', 'm-3', 'm-4'])
      } finally {
        await a.close()
        await proxy.close()
      }
    },
    60_000
  )

  it('one backend of PostgreSQL crashing (the server stays up, and ends every session) is a restart too: nobody takes the buckets meanwhile', async () => {
    const url = await createDatabase(server.url, `restart_backend_${process.pid}`)
    const a = await PgQueue.open(url, IN_BUCKETS)
    const b = await PgQueue.open(url, IN_BUCKETS)
    const { default: postgres } = await import('pg')
    const victim = new postgres.Client(url)
    victim.on('error', () => undefined)
    try {
      await a.enqueue(Array.from({ length: 40 }, (_, i) => event(i, { userKey: `u-${i}`, receivedAt: T0 })))
      const leased: Job[] = await a.lease('p1', 500, 60_000, T0 + 10)
      expect(leased).toHaveLength(40)
      clearInterval(ownersOf(a).pinger)
      const started = await sql(url, 'SELECT pg_postmaster_start_time()::text AS t')
      // A backend killed (the OOM killer): PostgreSQL ends every session and starts its processes again.
      await victim.connect()
      process.kill(Number((await victim.query('SELECT pg_backend_pid() AS p')).rows[0].p), 'SIGKILL')
      await until(async () => (await sql(url, 'SELECT 1').catch(() => undefined)) !== undefined, 'PostgreSQL back')
      expect(await sql(url, 'SELECT pg_postmaster_start_time()::text AS t')).toEqual(started)
      await leftToOwner(a, b, leased, 8)
    } finally {
      await victim.end().catch(() => undefined)
      await Promise.all([a.close(), b.close()])
    }
  }, 60_000)

  it('a server that lost its last commits hands out transaction and row ids again: the owner takes its lane over afresh, and reads what comes after', async () => {
    const url = await createDatabase(server.url, `restart_lost_commits_${process.pid}`)
    // Commits acknowledged before they are on disk, and the WAL written seldom: a crash loses the last ones.
    await sql(server.url, "ALTER SYSTEM SET wal_writer_delay = '10s'")
    await sql(server.url, "ALTER SYSTEM SET wal_writer_flush_after = '512MB'")
    await sql(server.url, 'SELECT pg_reload_conf()')
    await sql(server.url, `ALTER DATABASE ${new URL(url).pathname.slice(1)} SET synchronous_commit = off`)
    const a = await PgQueue.open(url, FAKE_TIME)
    const afresh = () => ownersOf(a).takenAfresh
    try {
      await a.enqueue([event(1, { userKey: 'u-1' })])
      await a.complete(await a.lease('p1', 10, 60_000, T0 + 10))
      // Everything so far on disk, the lane's epoch with it; then four events queued and leased, and lost in the crash.
      await sql(server.url, 'CHECKPOINT')
      for (const i of [2, 3, 4, 5]) await a.enqueue([event(i, { userKey: `u-${i}` })])
      const flying: Job[] = []
      await until(async () => (flying.push(...(await a.lease('p1', 10, 60_000, T0 + 20))), flying.length === 4), 'a')
      server.crash()
      await sleep(300)
      server.restart()
      await until(() => afresh() === 1, 'a taking its lane over afresh')
      expect(reclaimed(a)).toBe(0)
      // The answers for what was in flight change nothing; events queued now get the ids used before the crash.
      await a.complete(flying)
      for (const i of [6, 7]) await a.enqueue([event(i, { userKey: `u-${i}` })])
      const later: string[] = []
      for (let now = T0 + 30; later.length < 2 && now < T0 + 3_000; now += 10) {
        const jobs = await a.lease('p1', 10, 60_000, now)
        later.push(...jobs.map((j) => j.messageId))
        await a.complete(jobs)
        await sleep(20)
      }
      expect(later).toEqual(['m-6', 'm-7'])
    } finally {
      await a.close()
      await sql(server.url, 'ALTER SYSTEM RESET wal_writer_delay')
      await sql(server.url, 'ALTER SYSTEM RESET wal_writer_flush_after')
      await sql(server.url, 'SELECT pg_reload_conf()')
    }
  }, 60_000)

  it('a reclaim whose claims were taken but whose answer was lost ends its connection: no claim is left held twice', async () => {
    const url = await createDatabase(server.url, `restart_lock_answer_${process.pid}`)
    const a = await PgQueue.open(url, { ...FAKE_TIME, ownedIdleMs: 1_500 })
    const b = await PgQueue.open(url, FAKE_TIME)
    const owners = ownersOf(a)
    const { default: postgres } = await import('pg')
    const query = postgres.Client.prototype.query
    try {
      await a.enqueue([event(1, { userKey: 'u-1' })])
      const flying = await a.lease('p1', 10, 60_000, T0 + 10)
      clearInterval(owners.pinger)
      const before = owners.owner
      await sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'oneflow-relay owner%'"
      )
      await until(() => owners.owner !== before, 'a hearing its claims connection end')
      // The reclaim's claims are taken on the server, but the answer fails on the way (a client-side timeout).
      let lost = 0
      ;(postgres.Client.prototype as unknown as { query: unknown }).query = function (
        this: pg.Client,
        ...args: unknown[]
      ) {
        const sent = (query as (...a: unknown[]) => Promise<unknown>).apply(this, args)
        if (lost === 0 && typeof args[0] === 'string' && args[0].includes('pg_try_advisory_lock(k.key)')) {
          lost++
          return sent.then(() => Promise.reject(new Error('Query read timeout')))
        }
        return sent
      }
      await owners.ping()
      postgres.Client.prototype.query = query
      expect(lost).toBe(1)
      // Taken back on the next connection, delivered, and let go once idle: b can take the lane then.
      await owners.ping()
      expect(reclaimed(a)).toBe(1)
      await a.complete(flying)
      await sleep(1_700)
      await owners.ping()
      await b.enqueue([event(2, { userKey: 'u-2' })])
      let got: Job[] = []
      await until(async () => (got = await b.lease('p1', 10, 60_000, T0 + 20)).length > 0, 'b taking the lane')
      expect(got.map((j) => j.messageId)).toEqual(['m-2'])
    } finally {
      postgres.Client.prototype.query = query
      await Promise.all([a.close(), b.close()])
    }
  }, 60_000)

  it('tells a write that may have committed from one that cannot have', () => {
    const pgError = (code: string) => Object.assign(new Error('x'), { code })
    expect(mayHaveCommitted(new Error('Connection terminated unexpectedly'))).toBe(true)
    expect(mayHaveCommitted(pgError('ECONNRESET'))).toBe(true)
    expect(mayHaveCommitted(pgError('57P01'))).toBe(true)
    expect(mayHaveCommitted(pgError('08006'))).toBe(true)
    expect(mayHaveCommitted(pgError('ECONNREFUSED'))).toBe(false)
    expect(mayHaveCommitted(pgError('57P03'))).toBe(false)
    expect(mayHaveCommitted(pgError('57014'))).toBe(false)
    expect(mayHaveCommitted(pgError('40P01'))).toBe(false)
    expect(mayHaveCommitted(new Error('timeout exceeded when trying to connect'))).toBe(false)
  })
})
