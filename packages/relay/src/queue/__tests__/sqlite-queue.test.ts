import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { SqliteQueue } from '../sqlite-queue'
import type { Queue } from '../queue'
import { tempDir } from '../../__tests__/helpers'
import { describeQueue, event, T0 } from './queue-conformance'

describeQueue('SQLite', {
  open: async () => new SqliteQueue(join(tempDir(), 'queue.db')),
  reopen: async (queue: Queue) => new SqliteQueue((queue as SqliteQueue).path)
})

describe('SQLite: space comes back after a backlog is delivered', () => {
  it('live bytes drop at once; compact() shrinks the file and the WAL', async () => {
    const q = new SqliteQueue(join(tempDir(), 'queue.db'))
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
