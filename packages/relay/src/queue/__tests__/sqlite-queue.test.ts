import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { describe, expect, it } from 'vitest'
import { SqliteQueue } from '../sqlite-queue'
import type { Queue } from '../queue'
import { tempDir } from '../../__tests__/helpers'
import { describeQueue, event, T0 } from './queue-conformance'

/** A small disk reserve: these tests open hundreds of queues. */
const SMALL = { reserveBytes: 64 * 1024 }

describeQueue('SQLite', {
  open: async () => new SqliteQueue(join(tempDir(), 'queue.db'), SMALL),
  reopen: async (queue: Queue) => new SqliteQueue((queue as SqliteQueue).path, SMALL),
  scan: async (queue: Queue, now: number) => (queue as SqliteQueue).scanStats(now),
  statsRuns: 40
})

describe('SQLite: space comes back after a backlog is delivered', () => {
  it('live bytes drop at once; compact() shrinks the file and the WAL', async () => {
    const q = new SqliteQueue(join(tempDir(), 'queue.db'), SMALL)
    try {
      const body = JSON.stringify({ type: 'track', event: 'E', userId: 'u', properties: { blob: 'x'.repeat(2_000) } })
      for (let b = 0; b < 10; b++)
        await q.enqueue(Array.from({ length: 200 }, (_, i) => ({ ...event(b * 200 + i), body })))
      const full = await q.liveBytes()
      expect(full).toBeGreaterThan(4_000_000)
      for (;;) {
        const jobs = await q.lease('p1', 500, 60_000, T0 + 10_000)
        if (jobs.length === 0) break
        await q.complete(jobs.map((j) => j.id))
      }
      await q.pruneDedup(Number.MAX_SAFE_INTEGER)
      expect(await q.liveBytes()).toBeLessThan(full / 4)
      const fileBytes = () => statSync(q.path).size + (existsSync(`${q.path}-wal`) ? statSync(`${q.path}-wal`).size : 0)
      const before = fileBytes()
      for (let i = 0; i < 5; i++) await q.compact()
      expect(fileBytes()).toBeLessThan(before / 4)
    } finally {
      await q.close()
    }
  })
})

describe('SQLite: each lane splits only its own inbox rows', () => {
  it("a lease on one lane leaves another lane's backlog in the inbox, untouched", async () => {
    const q = new SqliteQueue(join(tempDir(), 'queue.db'), SMALL)
    try {
      for (let b = 0; b < 10; b++)
        await q.enqueue(Array.from({ length: 500 }, (_, i) => event(b * 500 + i, { projectId: 'oneflow-lane' })))
      await q.enqueue([event(99_999, { projectId: 'segment-lane' })])
      const jobs = await q.lease('segment-lane', 500, 60_000, T0 + 100_000)
      expect(jobs.map((j) => j.messageId)).toEqual(['m-99999'])
      const db = new Database(q.path, { readonly: true })
      try {
        expect(db.prepare("SELECT count(*) FROM events WHERE project_id = 'oneflow-lane'").pluck().get()).toBe(0)
        expect(db.prepare("SELECT sum(events) FROM inbox WHERE project_id = 'oneflow-lane'").pluck().get()).toBe(5000)
      } finally {
        db.close()
      }
    } finally {
      await q.close()
    }
  })
})

describe('SQLite: the figures are counters, never a scan', () => {
  it('every statement stats() runs reads an index: one entry of it, or the events in flight (never a scan of events or inbox)', () => {
    const q = new SqliteQueue(join(tempDir(), 'queue.db'), SMALL)
    try {
      for (const sql of SqliteQueue.STATS_STATEMENTS) {
        const plan = q.queryPlan(sql)
        // A table scan, or an index walked further than its first entry, would grow with the queue; the one
        // exception reads the leased events (at most what the lane's leases hold), in their own partial index.
        expect(plan, sql).not.toMatch(/SCAN (events|inbox)(?! USING (COVERING )?INDEX)/)
        if (/SCAN (events|inbox)/.test(plan)) expect(sql).toMatch(/ORDER BY \w+ LIMIT 1$/)
        if (/FROM events/.test(sql) && !/LIMIT 1$/.test(sql))
          expect(plan, sql).toMatch(/^SEARCH events USING INDEX events_inflight \(project_id=\?\)$/)
      }
    } finally {
      void q.close()
    }
  })
})

describe('SQLite: the delivery path reads partial indexes', () => {
  // Older files had two indexes holding every event in every state, so each lease and settle moved four index
  // entries; now an event is in one small index per state it is in (docs/relay-queue.md, "Indexes").
  const expected: Record<keyof typeof SqliteQueue.DELIVERY_STATEMENTS, string[]> = {
    candidates: ['events_waiting', 'events_inflight', 'events_later', 'events_held'],
    unholdUser: ['events_held'],
    unholdUsersOf: ['events_held'],
    expiredLeases: ['events_inflight'],
    unholdFreeUsers: ['events_held', 'events_inflight', 'events_later']
  }
  it('each statement uses the partial index of each state it reads, and never scans the table', () => {
    const q = new SqliteQueue(join(tempDir(), 'queue.db'), SMALL)
    try {
      for (const [name, sql] of Object.entries(SqliteQueue.DELIVERY_STATEMENTS)) {
        // Parameters as literals (EXPLAIN needs values): an id list for json_each, a number elsewhere.
        const literal = sql
          .replace(/@project/g, "'p1'")
          .replace(/@user/g, "'u'")
          .replace(/@now|@limit/g, '1')
          .replace('json_each(?)', "json_each('[1]')")
          .replace(/\?/g, '1')
        const plan = q.queryPlan(literal)
        expect(plan, name).not.toMatch(/SCAN (events|b)(?! USING (COVERING )?INDEX)/)
        for (const index of expected[name as keyof typeof expected]) expect(plan, name).toContain(`INDEX ${index}`)
      }
    } finally {
      void q.close()
    }
  })

  it('a file made with the old indexes gets the new ones when opened, and its events are delivered in order', async () => {
    const path = join(tempDir(), 'queue.db')
    const q = new SqliteQueue(path, SMALL)
    await q.enqueue([event(1, { userKey: 'u1' }), event(2, { userKey: 'u2' }), event(3, { userKey: 'u1' })])
    expect((await q.lease('p1', 1, 60_000, T0 + 10)).map((j) => j.messageId)).toEqual(['m-1'])
    await q.close()
    const db = new Database(path)
    db.exec(`DROP INDEX events_waiting; DROP INDEX events_inflight; DROP INDEX events_later; DROP INDEX events_held_order;
      CREATE INDEX events_ready ON events (project_id, state, id);
      CREATE INDEX events_user ON events (project_id, user_key, state, next_attempt_at);`)
    db.close()
    const reopened = new SqliteQueue(path, SMALL)
    try {
      const indexes = new Database(path, { readonly: true })
      try {
        const names = indexes
          .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")
          .pluck()
          .all()
        expect(names).not.toContain('events_ready')
        expect(names).not.toContain('events_user')
        expect(names).toEqual(
          expect.arrayContaining(['events_waiting', 'events_inflight', 'events_later', 'events_held_order'])
        )
      } finally {
        indexes.close()
      }
      // m-1 is still leased (the lease outlives the restart): u1's next event waits for it, u2's does not.
      expect((await reopened.lease('p1', 10, 60_000, T0 + 20)).map((j) => j.messageId)).toEqual(['m-2'])
      expect(await reopened.recoverLeases(T0 + 120_000)).toBe(2)
      const again = (await reopened.lease('p1', 10, 60_000, T0 + 120_001)).map((j) => j.messageId)
      expect(again.filter((m) => m !== 'm-2')).toEqual(['m-1', 'm-3'])
    } finally {
      await reopened.close()
    }
  })
})

describe('SQLite: dedup', () => {
  it('forgets exactly the ids seen before the cut, and says how many', async () => {
    const q = new SqliteQueue(join(tempDir(), 'queue.db'), SMALL)
    try {
      await q.enqueue([event(1), event(2), event(3)])
      expect(await q.pruneDedup(T0 + 3)).toBe(2)
      expect(await q.enqueue([event(1), event(2), event(3)])).toEqual({ accepted: 2, duplicates: 1 })
    } finally {
      await q.close()
    }
  })
})
