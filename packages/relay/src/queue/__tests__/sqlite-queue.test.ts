import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, statSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { describe, expect, it } from 'vitest'
import { QueueClaimError, QueueOwnedError, SqliteQueue } from '../sqlite-queue'
import type { Queue } from '../queue'
import { tempDir } from '../../__tests__/helpers'
import { describeQueue, event, leaseProperty, T0 } from './queue-conformance'

/** A small disk reserve: these tests open hundreds of queues. */
const SMALL = { reserveBytes: 64 * 1024 }

/** Runs `test` on a fresh queue in a new directory, and closes the queue whatever happens. */
async function withQueue(test: (q: SqliteQueue) => Promise<void>): Promise<void> {
  const q = new SqliteQueue(join(tempDir(), 'queue.db'), SMALL)
  try {
    await test(q)
  } finally {
    await q.close()
  }
}

describeQueue('SQLite', {
  open: async () => new SqliteQueue(join(tempDir(), 'queue.db'), SMALL),
  reopen: async (queue: Queue) => new SqliteQueue((queue as SqliteQueue).path, SMALL),
  scan: async (queue: Queue, now: number) => (queue as SqliteQueue).scanStats(now),
  statsRuns: 40
})

describe('SQLite: space comes back after a backlog is delivered', () => {
  it('live bytes drop at once; compact() shrinks the file and the WAL', async () => {
    await withQueue(async (q) => {
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
    })
  })
})

describe('SQLite: each lane splits only its own inbox rows', () => {
  it("a lease on one lane leaves another lane's backlog in the inbox, untouched", async () => {
    await withQueue(async (q) => {
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
    })
  })
})

describe('SQLite: inbox rows keep every body exactly', () => {
  it('bodies with newlines, NUL, emoji, lone surrogates and JSON-looking text come back as they went in, in order', async () => {
    await withQueue(async (q) => {
      const bodies = [
        JSON.stringify({ type: 'track', event: 'line\nbreak', userId: 'a' }),
        'raw\nnewline and \u0000 NUL',
        '\ud800 lone high, \udc00 lone low, \ud83d\ude00 a pair',
        '',
        '[1,2,3]\n{"not":"a header"}',
        '😀'.repeat(1_000)
      ]
      await q.enqueue(bodies.map((body, i) => event(i, { body, userKey: 'one-user' })))
      const jobs = await q.lease('p1', 50, 60_000, T0 + 100)
      expect(jobs.map((j) => j.body)).toEqual(bodies)
    })
  })

  it('reads an inbox row an older version wrote (one JSON array of events) and delivers it in order', async () => {
    const path = join(tempDir(), 'queue.db')
    await new SqliteQueue(path, SMALL).close()
    const db = new Database(path)
    const old = [1, 2].map((n) => {
      const e = event(n, { userKey: 'u' })
      return [e.messageId, e.sourceName, e.userKey, e.body, e.receivedAt]
    })
    db.prepare("INSERT INTO inbox (project_id, events, received_at, body) VALUES ('p1', 2, ?, ?)").run(
      T0 + 1,
      JSON.stringify(old)
    )
    db.prepare("INSERT INTO counters (lane, name, value) VALUES ('p1', 'undelivered', 2)").run()
    db.close()
    const q = new SqliteQueue(path, SMALL)
    try {
      await q.enqueue([event(3, { userKey: 'u' })])
      const jobs = await q.lease('p1', 50, 60_000, T0 + 100)
      expect(jobs.map((j) => [j.messageId, j.body])).toEqual([1, 2, 3].map((n) => [`m-${n}`, event(n).body]))
    } finally {
      await q.close()
    }
  })
})

describe('SQLite: a damaged inbox row', () => {
  it('stops its lane at that row on every lease (the rows before it delivered, none after), drops nothing, other lanes go on', async () => {
    const path = join(tempDir(), 'queue.db')
    const q = new SqliteQueue(path, SMALL)
    try {
      // One user, three requests: the second one's row is damaged.
      for (const n of [1, 2, 3]) await q.enqueue([event(n, { userKey: 'a' })])
      await q.enqueue([event(9, { projectId: 'p2' })])
      const db = new Database(path)
      db.prepare(
        "UPDATE inbox SET body = substr(body, 1, length(body) - 3) WHERE id = (SELECT id FROM inbox WHERE project_id = 'p1' ORDER BY id LIMIT 1 OFFSET 1)"
      ).run()
      db.close()
      const first = await q.lease('p1', 50, 60_000, T0 + 100)
      expect(first.map((j) => j.messageId)).toEqual(['m-1'])
      await q.complete(first)
      for (let attempt = 0; attempt < 3; attempt++) {
        await expect(q.lease('p1', 50, 60_000, T0 + 100)).rejects.toMatchObject({
          name: 'InboxRowError',
          message: expect.stringMatching(/inbox row \d+ .* \(lane p1\) cannot be read/)
        })
        await q.recoverLeases(T0 + 200_000)
      }
      expect((await q.lease('p2', 50, 60_000, T0 + 100)).map((j) => j.messageId)).toEqual(['m-9'])
      expect((await q.stats(T0 + 100)).lanes.p1).toBe(2)
    } finally {
      await q.close()
    }
  })
})

describe('SQLite: a failing inbox read', () => {
  it('fails the lease (nothing handed out) when reading more rows fails for any reason but a damaged row', async () => {
    await withQueue(async (q) => {
      for (let n = 0; n < 20; n++) await q.enqueue([event(n)])
      // The second read of this lease (rows 17 on; a read takes 16) fails as a disk error would.
      const inner = q as unknown as { readInbox: (...args: unknown[]) => boolean }
      const read = inner.readInbox.bind(q)
      let reads = 0
      inner.readInbox = (...args: unknown[]) => {
        if (++reads === 2) throw Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' })
        return read(...args)
      }
      await expect(q.lease('p1', 50, 60_000, T0 + 100)).rejects.toMatchObject({ code: 'SQLITE_IOERR' })
      // Nothing was handed out: the next lease gets every event, in order.
      inner.readInbox = read
      const jobs = await q.lease('p1', 50, 60_000, T0 + 100)
      expect(jobs.map((j) => j.messageId)).toEqual(Array.from({ length: 20 }, (_, n) => `m-${n}`))
    })
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
    new SqliteQueue(path, SMALL).close()
    // What a relay of an older version left: its events split into rows, m-1 leased (a lease not yet expired),
    // its indexes, no inbox `done` column and no counters yet.
    const db = new Database(path)
    const insert = db.prepare(
      `INSERT INTO events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state, lease_until)
       VALUES (@messageId, @sourceName, @projectId, @userKey, @body, @receivedAt, @receivedAt, @state, @leaseUntil)`
    )
    for (const [n, user, state] of [
      [1, 'u1', 'leased'],
      [2, 'u2', 'pending'],
      [3, 'u1', 'pending']
    ] as const)
      insert.run({ ...event(n, { userKey: user }), state, leaseUntil: state === 'leased' ? T0 + 60_010 : null })
    db.exec(`DROP INDEX events_waiting; DROP INDEX events_inflight; DROP INDEX events_later; DROP INDEX events_held_order;
      DROP INDEX events_open; ALTER TABLE inbox DROP COLUMN done; DELETE FROM counters;
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
          expect.arrayContaining([
            'events_waiting',
            'events_inflight',
            'events_later',
            'events_held_order',
            'events_open'
          ])
        )
      } finally {
        indexes.close()
      }
      // m-1 was leased by the relay before, which is gone (this one holds the file's claim): its lease is taken
      // back at once, whatever its time says, and u1's events come in order.
      const again = (await reopened.lease('p1', 10, 60_000, T0 + 20)).map((j) => j.messageId)
      expect(again).toEqual(['m-1', 'm-2', 'm-3'])
      expect((await reopened.stats(T0 + 20)).leased).toBe(again.length)
    } finally {
      await reopened.close()
    }
  })
})

describe('SQLite: dedup', () => {
  it('forgets exactly the ids seen before the cut, and says how many', async () => {
    await withQueue(async (q) => {
      await q.enqueue([event(1), event(2), event(3)])
      expect(await q.pruneDedup(T0 + 3)).toBe(2)
      expect(await q.enqueue([event(1), event(2), event(3)])).toEqual({ accepted: 2, duplicates: 1 })
    })
  })
})

describe('SQLite: events leased straight from the inbox', () => {
  leaseProperty({
    open: async () => new SqliteQueue(join(tempDir(), 'queue.db'), SMALL),
    crash: async (q) => {
      await q.close()
      const again = new SqliteQueue((q as SqliteQueue).path, SMALL)
      await again.recoverLeases(Number.MAX_SAFE_INTEGER)
      return again
    },
    scan: async (q, now) => (q as SqliteQueue).scanStats(now),
    numRuns: 200
  })
})

describe('SQLite: one relay per file', () => {
  /** Another process holding the file's claim as a relay's queue does: an open exclusive lock on `<path>.owner`. */
  async function otherClaimant(path: string) {
    const child = spawn(
      process.execPath,
      [
        '-e',
        "const db = new (require('better-sqlite3'))(process.argv[1]); db.exec('BEGIN EXCLUSIVE'); console.log('locked'); setInterval(() => {}, 1000)",
        `${path}.owner`
      ],
      { cwd: join(__dirname, '..', '..', '..'), stdio: ['ignore', 'pipe', 'inherit'] }
    )
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('locked') && resolve())
      child.once('exit', (code) => reject(new Error(`the claimant exited (${code})`)))
    })
    // What its queue writes beside the lock, for the message.
    const db = new Database(path)
    db.prepare('INSERT OR REPLACE INTO owner (id, pid, since) VALUES (1, ?, ?)').run(child.pid, Date.now())
    db.close()
    return child
  }

  it('while another process holds the file, even frozen, leases refuse with a clear error and recovery takes nothing back; once it is gone, at once', async () => {
    const path = join(tempDir(), 'queue.db')
    const q = new SqliteQueue(path, SMALL)
    await q.enqueue([event(1), event(2)])
    const other = await otherClaimant(path)
    try {
      // A lease of the other relay's, in the table.
      const db = new Database(path)
      db.prepare(
        `INSERT INTO events (message_id, source_name, project_id, user_key, body, received_at, next_attempt_at, state, lease_until, lease_token)
         VALUES ('theirs', 'web', 'p1', 'u-9', '{}', ?, ?, 'leased', ?, 7)`
      ).run(T0, T0, T0 + 1_000)
      db.close()
      other.kill('SIGSTOP')
      const refused = await q.lease('p1', 10, 60_000, T0 + 10).catch((error: unknown) => error)
      expect(refused).toBeInstanceOf(QueueOwnedError)
      expect((refused as Error).message).toContain(`pid ${other.pid}`)
      expect((refused as Error).message).toContain('One SQLite file serves one relay')
      expect(await q.recoverLeases(Number.MAX_SAFE_INTEGER)).toBe(0)
      other.kill('SIGKILL')
      await new Promise((resolve) => other.once('exit', resolve))
      // Its process is gone: the file is free (tried again after CLAIM_RETRY_MS), and its lease is taken back at
      // once, though its time (T0 + 1,000) has not come.
      await new Promise((resolve) => setTimeout(resolve, 1_100))
      expect((await q.lease('p1', 10, 60_000, T0 + 20)).map((j) => j.messageId)).toEqual(['theirs'])
      expect((await q.lease('p1', 10, 60_000, T0 + 20)).map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
    } finally {
      other.kill('SIGKILL')
      await q.close()
    }
  })

  it('a symlink to the file is the same file: one claim', async () => {
    const dir = tempDir()
    const real = join(dir, 'real', 'queue.db')
    const first = new SqliteQueue(real, SMALL)
    mkdirSync(join(dir, 'link'))
    symlinkSync(real, join(dir, 'link', 'queue.db'))
    const second = new SqliteQueue(join(dir, 'link', 'queue.db'), SMALL)
    try {
      await first.enqueue([event(1)])
      expect((await first.lease('p1', 10, 60_000, T0 + 10)).map((j) => j.messageId)).toEqual(['m-1'])
      await expect(second.lease('p1', 10, 60_000, T0 + 10)).rejects.toBeInstanceOf(QueueOwnedError)
    } finally {
      await first.close()
      await second.close()
    }
  })

  it('a claim that cannot be made is an error that says so, not "another relay"', async () => {
    const path = join(tempDir(), 'queue.db')
    const q = new SqliteQueue(path, SMALL)
    // Something in the way of the lock file (here a directory; a file this user may not write fails alike).
    mkdirSync(`${path}.owner`)
    try {
      await q.enqueue([event(1)])
      for (let attempt = 0; attempt < 2; attempt++) {
        const error = await q.lease('p1', 10, 60_000, T0 + 10).catch((e: unknown) => e)
        expect(error).toBeInstanceOf(QueueClaimError)
        expect((error as Error).message).toContain(`${path}.owner`)
        expect((error as Error).message).toContain('write access')
      }
      expect(await q.recoverLeases(T0 + 10)).toBe(0)
    } finally {
      await q.close()
    }
  })

  it('a second queue on the file in the same process is refused too, and takes it once the first is closed', async () => {
    const path = join(tempDir(), 'queue.db')
    const first = new SqliteQueue(path, SMALL)
    const second = new SqliteQueue(path, SMALL)
    try {
      await first.enqueue([event(1)])
      expect((await first.lease('p1', 10, 60_000, T0 + 10)).map((j) => j.messageId)).toEqual(['m-1'])
      await expect(second.lease('p1', 10, 60_000, T0 + 10)).rejects.toThrow(`pid ${process.pid}`)
      await first.close()
      await new Promise((resolve) => setTimeout(resolve, 1_100))
      // What the first had in flight was in its memory only: the second leases it again.
      expect((await second.lease('p1', 10, 60_000, T0 + 20)).map((j) => j.messageId)).toEqual(['m-1'])
    } finally {
      await first.close().catch(() => {})
      await second.close()
    }
  })
})
