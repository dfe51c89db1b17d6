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
  it('every statement stats() runs reads an index, at most one entry of it (never a scan of events or inbox)', () => {
    const q = new SqliteQueue(join(tempDir(), 'queue.db'), SMALL)
    try {
      for (const sql of SqliteQueue.STATS_STATEMENTS) {
        const plan = q.queryPlan(sql)
        // A table scan, or an index walked further than its first entry, would grow with the queue.
        expect(plan, sql).not.toMatch(/SCAN (events|inbox)(?! USING (COVERING )?INDEX)/)
        if (/SCAN (events|inbox)/.test(plan)) expect(sql).toMatch(/ORDER BY \w+ LIMIT 1$/)
      }
    } finally {
      void q.close()
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
