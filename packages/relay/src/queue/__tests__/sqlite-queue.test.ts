import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { SqliteQueue } from '../sqlite-queue'
import type { Queue } from '../queue'
import { tempDir } from '../../__tests__/helpers'
import { describeQueue, event, T0 } from './queue-conformance'

/** A small disk reserve: these tests open hundreds of queues. */
const SMALL = { reserveBytes: 64 * 1024 }

describeQueue('SQLite', {
  open: async () => new SqliteQueue(join(tempDir(), 'queue.db'), SMALL),
  reopen: async (queue: Queue) => new SqliteQueue((queue as SqliteQueue).path, SMALL)
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

  /** Every operation a relay and the admin commands make, in any order. */
  const op = fc.oneof(
    fc.record({
      kind: fc.constant('enqueue' as const),
      n: fc.integer({ min: 1, max: 30 }),
      lane: fc.constantFrom('p1', 'p2'),
      dead: fc.boolean()
    }),
    fc.record({
      kind: fc.constant('lease' as const),
      lane: fc.constantFrom('p1', 'p2'),
      limit: fc.integer({ min: 1, max: 20 })
    }),
    fc.record({
      kind: fc.constantFrom('complete' as const, 'release' as const, 'retry' as const, 'dead' as const),
      share: fc.double({ min: 0, max: 1, noNaN: true })
    }),
    fc.record({ kind: fc.constantFrom('recover' as const, 'replay' as const, 'purge' as const, 'prune' as const) })
  )

  it('after any sequence of operations, stats() from the counters equals a full scan (and survives a reopen)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 40 }), async (ops) => {
        let q = new SqliteQueue(join(tempDir(), 'queue.db'), SMALL)
        let seq = 0
        let now = T0 + 1_000
        const leased: number[] = []
        try {
          for (const o of ops) {
            now += 100
            if (o.kind === 'enqueue') {
              await q.enqueue(
                Array.from({ length: o.n }, () => {
                  const n = seq++
                  // Received now, as ingest stamps events: the queue's clock only moves forward (a replay re-enters
                  // events at its own now, after everything received before it).
                  return event(n, {
                    projectId: o.lane,
                    userKey: `u-${n % 7}`,
                    receivedAt: now,
                    ...(o.dead && n % 3 === 0 && { deadReason: 'rejected at ingest (test)' })
                  })
                })
              )
            } else if (o.kind === 'lease') {
              leased.push(...(await q.lease(o.lane, o.limit, 1_000, now)).map((j) => j.id))
            } else if (o.kind === 'complete' || o.kind === 'release' || o.kind === 'retry' || o.kind === 'dead') {
              const ids = leased.splice(0, Math.ceil(leased.length * o.share))
              if (o.kind === 'complete') await q.complete(ids)
              else if (o.kind === 'release') await q.release(ids, now)
              else if (o.kind === 'retry') await q.retry(ids, now + 50, 'boom', now)
              else await q.deadLetter(ids, { reason: 'refused', response: 'x'.repeat(ids.length), sent: true }, now)
            } else if (o.kind === 'recover') {
              await q.recoverLeases(now + 5_000)
              leased.length = 0
            } else if (o.kind === 'replay') await q.replayDead('all', now)
            else if (o.kind === 'purge') await q.purgeDead((await q.listDead({ limit: 2 })).map((d) => d.id))
            else await q.pruneDead(now - 250, 300)
            const { bytes: _bytes, ...counted } = await q.stats(now)
            expect(counted).toEqual(q.scanStats(now))
          }
          await q.close()
          q = new SqliteQueue(q.path, SMALL)
          const { bytes: _bytes, ...counted } = await q.stats(now)
          expect(counted).toEqual(q.scanStats(now))
        } finally {
          await q.close()
        }
      }),
      { numRuns: 40 }
    )
  }, 120_000)
})
