/**
 * One conformance suite for every queue driver (SQLite, PostgreSQL), so the drivers cannot drift apart.
 * A driver's test file calls `describeQueue` with a factory that opens a fresh, empty queue.
 */
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import type { Job, JobRef, NewEvent, Queue, QueueStats } from '../queue'

export interface QueueFactory {
  /** A fresh, empty queue. */
  open(): Promise<Queue>
  /** The same storage opened again (after `close`), to prove commits are durable. */
  reopen(queue: Queue): Promise<Queue>
  /** The figures by a full scan, which stats() must equal; with `statsRuns`, how many generated sequences. */
  scan?(queue: Queue, now: number): Promise<Omit<QueueStats, 'bytes'>>
  statsRuns?: number
  /**
   * Whether a lease takes the project's oldest ready events whoever's they are (true unless said): a PostgreSQL queue
   * with buckets takes each bucket's oldest, and passes over a bucket with a lease in flight.
   */
  oldestFirstAcrossUsers?: boolean
}

export const T0 = 1_800_000_000_000

/** The dedup window the queues are opened with (limits.dedupWindowHours' default). */
export const DEDUP_WINDOW_MS = 24 * 3_600_000

export function event(n: number, extra: Partial<NewEvent> = {}): NewEvent {
  return {
    messageId: `m-${n}`,
    sourceName: 'web',
    projectId: 'p1',
    userKey: `u-${n}`,
    body: JSON.stringify({ type: 'track', event: `E${n}`, userId: `u-${n}` }),
    receivedAt: T0 + n,
    ...extra
  }
}

export function describeQueue(name: string, factory: QueueFactory): void {
  const scan = factory.scan?.bind(factory)
  describe(`queue conformance: ${name}`, () => {
    const open: Queue[] = []
    const fresh = async () => {
      const q = await factory.open()
      open.push(q)
      return q
    }
    afterEach(async () => {
      await Promise.allSettled(open.splice(0).map((q) => q.close()))
    })

    it('stores events durably: a reopened queue has them', async () => {
      const q = await fresh()
      expect(await q.enqueue([event(1), event(2)])).toEqual({ accepted: 2, duplicates: 0 })
      await q.close()
      open.pop()
      const again = await factory.reopen(q)
      open.push(again)
      expect((await again.lease('p1', 10, 60_000, T0 + 10)).map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
    })

    it('drops a messageId its source already sent, but not the same id from another source', async () => {
      const q = await fresh()
      await q.enqueue([event(1)])
      expect(await q.enqueue([event(1), event(1, { sourceName: 'app' }), event(2), event(2)])).toEqual({
        accepted: 2,
        duplicates: 2
      })
      expect((await q.stats(T0 + 10)).pending).toBe(3)
    })

    it('commits many concurrent enqueues, answering each with its own result', async () => {
      const q = await fresh()
      const results = await Promise.all(Array.from({ length: 60 }, (_, i) => q.enqueue([event(i), event(i % 5)])))
      expect(results.reduce((n, r) => n + r.accepted, 0)).toBe(60)
      expect(results.every((r) => r.accepted + r.duplicates === 2)).toBe(true)
      expect((await q.stats(T0 + 100)).pending).toBe(60)
    })

    it('keeps client and webhook messageIds apart: neither suppresses the other', async () => {
      const q = await fresh()
      expect(await q.enqueue([event(1, { messageId: '1flow-alert-a1' })])).toEqual({ accepted: 1, duplicates: 0 })
      expect(await q.enqueue([event(2, { messageId: '1flow-alert-a1', origin: 'webhook' })])).toEqual({
        accepted: 1,
        duplicates: 0
      })
      expect(
        await q.enqueue([
          event(3, { messageId: '1flow-alert-a1', origin: 'webhook' }),
          event(4, { messageId: '1flow-alert-a1' })
        ])
      ).toEqual({ accepted: 0, duplicates: 2 })
    })

    it('stores a rejected event straight into the dead letters, never deduplicating it', async () => {
      const q = await fresh()
      const rejected = event(1, {
        userKey: '',
        deadReason:
          'rejected at ingest (missing_identity): event 0 has neither userId nor anonymousId; send at least one'
      })
      expect(await q.enqueue([rejected, rejected, event(2)])).toEqual({ accepted: 1, duplicates: 0 })
      expect(await q.lease('p1', 10, 60_000, T0 + 10)).toHaveLength(1)
      const dead = await q.listDead()
      expect(dead.map((d) => [d.messageId, d.reason, d.deadAt])).toEqual([
        ['m-1', rejected.deadReason, rejected.receivedAt],
        ['m-1', rejected.deadReason, rejected.receivedAt]
      ])
      expect((await q.stats(T0 + 10)).dead).toBe(2)
    })

    it('holds NUL in ids without failing the commit', async () => {
      const q = await fresh()
      expect(await q.enqueue([event(1, { messageId: 'm-\u00001', userKey: 'u-\u00001' })])).toEqual({
        accepted: 1,
        duplicates: 0
      })
      expect(await q.lease('p1', 10, 60_000, T0 + 10)).toHaveLength(1)
    })

    it('fails only the request whose values the database refuses; the others in its group commit are stored', async () => {
      const q = await fresh()
      const results = await Promise.allSettled([
        q.enqueue([event(1)]),
        q.enqueue([event(2, { receivedAt: (2n ** 70n) as unknown as number })]),
        q.enqueue([event(3)])
      ])
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
      expect((await q.lease('p1', 10, 60_000, T0 + 10)).map((j) => j.messageId)).toEqual(['m-1', 'm-3'])
    })

    it('leases oldest first, per project, up to the limit, and never the same event twice', async () => {
      const q = await fresh()
      await q.enqueue([event(1), event(2, { projectId: 'p2' }), event(3), event(4)])
      const [a, b] = await Promise.all([q.lease('p1', 2, 60_000, T0 + 10), q.lease('p1', 2, 60_000, T0 + 10)])
      const ids = [...a!, ...b!].map((j) => j.messageId)
      expect(ids.sort()).toEqual(['m-1', 'm-3', 'm-4'])
      expect(new Set(ids).size).toBe(ids.length)
      expect((await q.lease('p2', 10, 60_000, T0 + 10)).map((j) => j.messageId)).toEqual(['m-2'])
      expect(await q.lease('p1', 10, 60_000, T0 + 10)).toEqual([])
    })

    it("leases a lane's event at once, also when other lanes' events were accepted before it", async () => {
      const q = await fresh()
      for (let r = 0; r < 3; r++)
        await q.enqueue(Array.from({ length: 5 }, (_, i) => event(10 * r + i + 10, { projectId: 'p2' })))
      await q.enqueue([event(1)])
      expect((await q.lease('p1', 1, 60_000, T0 + 100)).map((j) => j.messageId)).toEqual(['m-1'])
      expect((await q.stats(T0 + 100)).lanes).toEqual({ p1: 1, p2: 15 })
      expect((await q.lease('p2', 100, 60_000, T0 + 100)).map((j) => j.messageId)).toHaveLength(15)
    })

    if (factory.oldestFirstAcrossUsers !== false)
      it("a lease of one takes the project's oldest ready event, whoever's it is", async () => {
        const q = await fresh()
        await q.enqueue([event(1, { userKey: 'alice' }), event(2, { userKey: 'bob' }), event(3, { userKey: 'carol' })])
        expect((await q.lease('p1', 1, 60_000, T0 + 10)).map((j) => j.messageId)).toEqual(['m-1'])
        expect((await q.lease('p1', 1, 60_000, T0 + 10)).map((j) => j.messageId)).toEqual(['m-2'])
      })

    it("holds back a user's later events while an earlier one is in flight or waiting for a retry", async () => {
      const q = await fresh()
      // (Alone when leased: which of several users' events a lease of one takes is the driver's choice.)
      await q.enqueue([event(1, { userKey: 'alice' })])
      const [first] = await q.lease('p1', 1, 60_000, T0 + 10)
      expect(first?.messageId).toBe('m-1')
      await q.enqueue([event(2, { userKey: 'bob' })])
      await q.enqueue([event(3, { userKey: 'alice' }), event(4, { userKey: 'carol' })])
      expect((await q.lease('p1', 10, 60_000, T0 + 20)).map((j) => j.messageId)).toEqual(['m-2', 'm-4'])
      await q.retry([first!.id], T0 + 5_000, '503', T0 + 30)
      expect(await q.lease('p1', 10, 60_000, T0 + 40)).toEqual([])
      const later = await q.lease('p1', 10, 60_000, T0 + 5_000)
      expect(later.map((j) => [j.messageId, j.attempts, j.firstAttemptAt])).toEqual([
        ['m-1', 1, T0 + 30],
        ['m-3', 0, null]
      ])
    })

    it("parks a blocked user's backlog (held) and gives it back in order when the blocker is settled", async () => {
      const q = await fresh()
      await q.enqueue([event(1, { userKey: 'alice' })])
      const [head] = await q.lease('p1', 10, 60_000, T0 + 10)
      await q.enqueue(
        Array.from({ length: 30 }, (_, i) => event(10 + i, { userKey: 'alice' })).concat([
          event(50, { userKey: 'bob' })
        ])
      )
      // The first lease looks at alice's backlog once, parks it, and finds bob.
      expect((await q.lease('p1', 10, 60_000, T0 + 100)).map((j) => j.messageId)).toEqual(['m-50'])
      expect(await q.lease('p1', 10, 60_000, T0 + 100)).toEqual([])
      expect((await q.stats(T0 + 100)).pending).toBe(30)
      await q.retry([head!.id], T0 + 1_000, '503', T0 + 110)
      expect(await q.lease('p1', 10, 60_000, T0 + 120)).toEqual([])
      // The retry time comes: the head first, then the parked ones, in order.
      expect((await q.lease('p1', 5, 60_000, T0 + 1_000)).map((j) => j.messageId)).toEqual([
        'm-1',
        'm-10',
        'm-11',
        'm-12',
        'm-13'
      ])
    })

    it('a released event waiting for its lane to resume keeps its user behind it (another relay must not overtake)', async () => {
      const q = await fresh()
      await q.enqueue([event(1, { userKey: 'alice' })])
      const [head] = await q.lease('p1', 1, 60_000, T0 + 10)
      await q.enqueue([event(2, { userKey: 'bob' }), event(3, { userKey: 'alice' })])
      await q.release([head!.id], T0 + 1_000)
      expect((await q.lease('p1', 10, 60_000, T0 + 100)).map((j) => j.messageId)).toEqual(['m-2'])
      expect((await q.lease('p1', 10, 60_000, T0 + 1_000)).map((j) => j.messageId)).toEqual(['m-1', 'm-3'])
    })

    it("leases a user's events in arrival order even when one was stamped ahead of the leaser's clock", async () => {
      const q = await fresh()
      // m-1 came through a relay whose clock runs 50 ms ahead; m-2 through one on time, after it.
      await q.enqueue([event(1, { userKey: 'alice', receivedAt: T0 + 50 })])
      await q.enqueue([event(2, { userKey: 'alice', receivedAt: T0 + 10 })])
      expect((await q.lease('p1', 10, 60_000, T0 + 20)).map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
    })

    it.each(['complete', 'deadLetter', 'release', 'recoverLeases'] as const)(
      'gives a held backlog back once its blocker is settled by %s',
      async (how) => {
        const q = await fresh()
        await q.enqueue([event(1, { userKey: 'alice' })])
        const [head] = await q.lease('p1', 10, 1_000, T0 + 10)
        await q.enqueue([event(2, { userKey: 'alice' }), event(3, { userKey: 'alice' })])
        expect(await q.lease('p1', 10, 60_000, T0 + 20)).toEqual([])
        if (how === 'complete') await q.complete([head!.id])
        if (how === 'deadLetter') await q.deadLetter([head!.id], { reason: '1Flow answered 400' }, T0 + 30)
        if (how === 'release') await q.release([head!.id], T0 + 30)
        if (how === 'recoverLeases') expect(await q.recoverLeases(T0 + 5_000)).toBe(1)
        const expected = how === 'release' || how === 'recoverLeases' ? ['m-1', 'm-2', 'm-3'] : ['m-2', 'm-3']
        // In one lease, or (a driver that left them unread behind their user) one after another.
        const got: string[] = []
        for (let i = 0; i < expected.length && got.length < expected.length; i++) {
          const jobs = await q.lease('p1', 10, 60_000, T0 + 5_000)
          got.push(...jobs.map((j) => j.messageId))
          await q.complete(jobs)
        }
        expect(got).toEqual(expected)
      }
    )

    it('expires dead letters by age, then the oldest past the size limit', async () => {
      const q = await fresh()
      await q.enqueue(
        [1, 2, 3, 4].map((n) =>
          event(n, { body: JSON.stringify({ type: 'track', event: 'x'.repeat(1000), userId: `u-${n}` }) })
        )
      )
      const jobs = await q.lease('p1', 10, 60_000, T0 + 10)
      for (const [i, job] of jobs.entries()) await q.deadLetter([job.id], { reason: 'bad' }, T0 + 100 * i)
      // Dead before T0 + 50: the first. Then keep at most ~2.5 KB: the two oldest of the rest go.
      expect(await q.pruneDead(T0 + 50, 2_500)).toEqual({ expired: 1, overSize: 1 })
      expect((await q.listDead()).map((d) => d.messageId)).toEqual(['m-3', 'm-4'])
      const { deadLetters } = await q.stats(T0 + 1_000)
      expect(deadLetters.count).toBe(2)
      expect(deadLetters.bytes).toBeGreaterThan(2_000)
      expect(deadLetters.bytes).toBeLessThanOrEqual(2_500)
      expect(deadLetters.oldestAgeMs).toBe(1_000 - 200)
    })

    it('completes, releases without counting, and retries counting attempts', async () => {
      const q = await fresh()
      await q.enqueue([event(1), event(2), event(3)])
      const jobs = await q.lease('p1', 10, 60_000, T0 + 10)
      await q.complete([jobs[0]!.id])
      await q.release([jobs[1]!.id], T0 + 10)
      await q.retry([jobs[2]!.id], T0 + 10, 'boom', T0 + 10)
      await q.retry([jobs[2]!.id], T0 + 10, 'boom', T0 + 20)
      const again = await q.lease('p1', 10, 60_000, T0 + 30)
      expect(again.map((j) => [j.messageId, j.attempts, j.firstAttemptAt])).toEqual([
        ['m-2', 0, null],
        ['m-3', 2, T0 + 10]
      ])
    })

    it('takes back expired leases (a crashed worker) and only those', async () => {
      const q = await fresh()
      await q.enqueue([event(1)])
      await q.lease('p1', 1, 1_000, T0 + 10)
      await q.enqueue([event(2)])
      await q.lease('p1', 1, 60_000, T0 + 10)
      expect(await q.recoverLeases(T0 + 2_000)).toBe(1)
      expect((await q.lease('p1', 10, 60_000, T0 + 2_000)).map((j) => j.messageId)).toEqual(['m-1'])
    })

    it('a lease taken back is fenced: the settles and renewals of its old holder change nothing, those of the new holder apply', async () => {
      const q = await fresh()
      await q.enqueue([event(1, { userKey: 'u' }), event(2, { userKey: 'u' })])
      const stale = await q.lease('p1', 10, 1_000, T0 + 10)
      expect(stale.map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
      expect(stale.every((j) => typeof j.lease === 'number')).toBe(true)
      // The holder stalls past its lease (a frozen relay); the events are taken back and leased again.
      expect(await q.recoverLeases(T0 + 2_000)).toBe(2)
      const current = await q.lease('p1', 10, 60_000, T0 + 2_000)
      expect(current.map((j) => j.messageId)).toEqual(['m-1', 'm-2'])
      expect(current[0]!.lease).not.toBe(stale[0]!.lease)
      // The stale holder wakes up and writes what it would have: every write changes nothing.
      expect(await q.renew(stale, T0 + 500_000)).toEqual([])
      await q.complete([stale[0]!])
      await q.retry([stale[1]!], T0 + 9_000_000, 'late answer', T0 + 2_001)
      await q.deadLetter([stale[0]!], { reason: 'late refusal', sent: true }, T0 + 2_001)
      await q.release(stale, T0 + 2_001)
      let stats = await q.stats(T0 + 2_001)
      expect([stats.pending, stats.leased, stats.retrying, stats.dead]).toEqual([0, 2, 0, 0])
      // The current holder renews (recovery then leaves its lease alone) and settles.
      expect((await q.renew(current, T0 + 200_000)).sort((a, b) => a - b)).toEqual(current.map((j) => j.id))
      expect(await q.recoverLeases(T0 + 100_000)).toBe(0)
      await q.retry([current[1]!], T0 + 100_000, 'boom', T0 + 100_000)
      await q.complete([current[0]!])
      stats = await q.stats(T0 + 100_000)
      expect([stats.pending, stats.leased, stats.retrying]).toEqual([1, 0, 1])
      expect((await q.lease('p1', 10, 60_000, T0 + 100_000)).map((j) => [j.messageId, j.attempts])).toEqual([
        ['m-2', 1]
      ])
    })

    it('never strands held events: leasing and settling raced for many users deliver everything once, in order', async () => {
      const q = await fresh()
      const users = 12
      const perUser = 6
      await q.enqueue(Array.from({ length: users * perUser }, (_, i) => event(i, { userKey: `u-${i % users}` })))
      const delivered: string[] = []
      let inFlight: Job[] = []
      let now = T0 + 10
      for (let round = 0; round < 400 && delivered.length < users * perUser; round++) {
        const settling = inFlight
        // A lease and the settle of the previous lease at once (two relays, or one relay's two lanes of work).
        const [leased] = await Promise.all([q.lease('p1', 5, 60_000, now), q.complete(settling)])
        delivered.push(...settling.map((j) => j.messageId))
        inFlight = leased
        // Nothing in flight and nothing leased: whatever is held must come back at the next recovery.
        if (leased.length === 0 && settling.length === 0) await q.recoverLeases(now)
        now += 1
      }
      await q.complete(inFlight)
      delivered.push(...inFlight.map((j) => j.messageId))
      expect(new Set(delivered).size).toBe(users * perUser)
      expect(delivered).toHaveLength(users * perUser)
      for (let u = 0; u < users; u++) {
        const mine = delivered.map((m) => Number(m.slice(2))).filter((n) => n % users === u)
        expect(mine).toEqual([...mine].sort((a, b) => a - b))
      }
      const stats = await q.stats(now)
      expect([stats.pending, stats.leased]).toEqual([0, 0])
    })

    it('dead-letters with the reason, lists, replays and purges', async () => {
      const q = await fresh()
      await q.enqueue([event(1), event(2), event(3, { sourceName: 'app' })])
      const jobs = await q.lease('p1', 10, 60_000, T0 + 10)
      await q.deadLetter(
        [jobs[0]!.id],
        { reason: '1Flow answered 400', status: 400, response: '{"error":"bad"}' },
        T0 + 20
      )
      await q.deadLetter([jobs[1]!.id, jobs[2]!.id], { reason: 'invalid' }, T0 + 20)
      const dead = await q.listDead()
      expect(dead.map((d) => [d.messageId, d.reason, d.status, d.response, d.deadAt])).toEqual([
        ['m-1', '1Flow answered 400', 400, '{"error":"bad"}', T0 + 20],
        ['m-2', 'invalid', undefined, undefined, T0 + 20],
        ['m-3', 'invalid', undefined, undefined, T0 + 20]
      ])
      expect((await q.listDead({ sourceName: 'app' })).map((d) => d.messageId)).toEqual(['m-3'])
      expect((await q.stats(T0 + 30)).dead).toBe(3)
      expect(await q.replayDead([dead[0]!.id], T0 + 30)).toBe(1)
      expect((await q.lease('p1', 10, 60_000, T0 + 30)).map((j) => [j.messageId, j.attempts])).toEqual([['m-1', 0]])
      expect(await q.purgeDead('all')).toBe(2)
      expect((await q.stats(T0 + 30)).dead).toBe(0)
    })

    it('a dead letter after a send counts that send as an attempt; one that was never sent counts none', async () => {
      const q = await fresh()
      await q.enqueue([event(1), event(2)])
      const jobs = await q.lease('p1', 10, 60_000, T0 + 10)
      await q.deadLetter([jobs[0]!.id], { reason: '1Flow answered 400', status: 400, sent: true }, T0 + 20)
      await q.deadLetter([jobs[1]!.id], { reason: 'could not map the event' }, T0 + 20)
      expect((await q.listDead()).map((d) => [d.messageId, d.attempts, d.firstAttemptAt])).toEqual([
        ['m-1', 1, T0 + 20],
        ['m-2', 0, null]
      ])
    })

    it('reports depth, retries and the oldest age; forgets old message ids', async () => {
      const q = await fresh()
      await q.enqueue([event(1), event(2)])
      const [job] = await q.lease('p1', 1, 60_000, T0 + 10)
      await q.retry([job!.id], T0 + 60_000, 'later', T0 + 10)
      expect(await q.stats(T0 + 1_000)).toMatchObject({ pending: 2, leased: 0, retrying: 1, dead: 0, oldestAgeMs: 999 })
      // Remembered while the window lasts; forgotten once it has passed (PostgreSQL forgets whole generations, each
      // a window long, so "passed" is counted from the newest key of the commit that opened the generation).
      await q.pruneDedup(T0 + 1)
      expect(await q.enqueue([event(1)])).toEqual({ accepted: 0, duplicates: 1 })
      await q.pruneDedup(T0 + 2 + DEDUP_WINDOW_MS)
      expect(await q.enqueue([event(1)])).toEqual({ accepted: 1, duplicates: 0 })
      await expect(q.checkWritable()).resolves.toBeUndefined()
    })

    it('remembers an event longer when its dedup window starts later (webhooks retried for days)', async () => {
      const q = await fresh()
      const later = T0 + 72 * 3_600_000
      await q.enqueue([event(1), event(2, { dedupFrom: later })])
      await q.pruneDedup(T0 + 2 + DEDUP_WINDOW_MS)
      expect(await q.enqueue([event(1), event(2)])).toEqual({ accepted: 1, duplicates: 1 })
      await q.pruneDedup(later + 1)
      expect(await q.enqueue([event(2)])).toEqual({ accepted: 1, duplicates: 0 })
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
        limit: fc.integer({ min: 1, max: 20 }),
        // Settled by the lease's jobs (fenced, as the deliverer does) or by bare ids (as admin tools do).
        fenced: fc.boolean()
      }),
      fc.record({
        kind: fc.constantFrom('complete' as const, 'release' as const, 'retry' as const, 'dead' as const),
        share: fc.double({ min: 0, max: 1, noNaN: true })
      }),
      fc.record({
        kind: fc.constantFrom(
          'recover' as const,
          'replay' as const,
          'purge' as const,
          'prune' as const,
          'compact' as const
        )
      })
    )

    it('after any sequence of operations, stats() from the counters equals a full scan (and survives a reopen)', async () => {
      if (!scan) throw new Error('this driver has no scanStats')
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 40 }), async (ops) => {
          let q = await factory.open()
          let seq = 0
          let now = T0 + 1_000
          const leased: JobRef[] = []
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
                leased.push(...(await q.lease(o.lane, o.limit, 1_000, now)).map((j) => (o.fenced ? j : j.id)))
              } else if (o.kind === 'complete' || o.kind === 'release' || o.kind === 'retry' || o.kind === 'dead') {
                const ids = leased.splice(0, Math.ceil(leased.length * o.share))
                if (o.kind === 'complete') await q.complete(ids)
                else if (o.kind === 'release') await q.release(ids, now)
                else if (o.kind === 'retry') await q.retry(ids, now + 50, 'boom', now)
                else await q.deadLetter(ids, { reason: 'refused', response: 'x'.repeat(ids.length), sent: true }, now)
              } else if (o.kind === 'recover') {
                await q.recoverLeases(now + 5_000)
                // The leases' jobs stay, stale: what their holder writes now must change nothing, counters included.
                leased.splice(0, leased.length, ...leased.filter((r) => typeof r !== 'number'))
              } else if (o.kind === 'replay') await q.replayDead('all', now)
              else if (o.kind === 'purge') await q.purgeDead((await q.listDead({ limit: 2 })).map((d) => d.id))
              else if (o.kind === 'compact') await q.compact()
              else await q.pruneDead(now - 250, 300)
              const { bytes: _bytes, ...counted } = await q.stats(now)
              expect(counted).toEqual(await scan(q, now))
            }
            await q.close()
            q = await factory.reopen(q)
            const { bytes: _bytes, ...counted } = await q.stats(now)
            expect(counted).toEqual(await scan(q, now))
          } finally {
            await q.close()
          }
        }),
        { numRuns: factory.statsRuns ?? 20 }
      )
    }, 120_000)
  })
}

/** What the lease property needs of a driver. */
export interface LeasePropertyFactory {
  /** A fresh, empty queue (its own storage). */
  open(): Promise<Queue>
  /** The same storage after the process holding `queue` died: a new queue on it, which owns what the old one left. */
  crash(queue: Queue): Promise<Queue>
  scan(queue: Queue, now: number): Promise<Pick<QueueStats, 'pending' | 'leased'>>
  numRuns: number
}

/**
 * Random enqueues of three users, leases, completes, retries, releases, dead letters, expiries and crashes: at every
 * lease each user's earlier events are finished or earlier in the same lease, and no other lease holds the user; at
 * the end everything is delivered, once unless a crash had it in flight.
 */
export function leaseProperty(factory: LeasePropertyFactory): void {
  const op = fc.oneof(
    fc.record({
      kind: fc.constant('enqueue' as const),
      users: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 6 })
    }),
    fc.record({ kind: fc.constant('lease' as const), limit: fc.integer({ min: 1, max: 6 }) }),
    fc.record({
      kind: fc.constantFrom('complete' as const, 'retry' as const, 'release' as const, 'dead' as const),
      pick: fc.array(fc.nat(), { minLength: 1, maxLength: 4 })
    }),
    fc.record({ kind: fc.constant('recover' as const), after: fc.integer({ min: 0, max: 3_000 }) }),
    fc.record({ kind: fc.constant('crash' as const) })
  )

  it('whatever the order of leases, settles, expiries and crashes: each user in order, one lease at a time, nothing lost, nothing delivered twice but what a crash had in flight', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 60 }), async (ops) => {
        let q = await factory.open()
        let now = T0 + 1_000
        let seq = 0
        const userOf = new Map<string, number>()
        /** Jobs handed out and not settled, with when their lease ends; taken back ones are dropped. */
        let outstanding: Array<{ job: Job; until: number }> = []
        const finished = new Map<string, number>()
        /** Events a crash had in flight: those may be delivered once more. */
        const mayRepeat = new Set<string>()
        const finish = (job: Job) => finished.set(job.messageId, (finished.get(job.messageId) ?? 0) + 1)
        const lease = async (limit: number) => {
          const jobs = await q.lease('p1', limit, 1_000, now)
          for (const [i, job] of jobs.entries()) {
            // Every earlier event of the user is finished, or comes earlier in this same lease.
            const n = Number(job.messageId.slice(2))
            for (const [m, user] of userOf)
              if (user === userOf.get(job.messageId) && Number(m.slice(2)) < n && !finished.has(m))
                expect(
                  jobs.slice(0, i).map((j) => j.messageId),
                  `${job.messageId} before ${m}`
                ).toContain(m)
            // …and no other lease holds an event of that user.
            expect(outstanding.filter((o) => userOf.get(o.job.messageId) === userOf.get(job.messageId))).toEqual([])
          }
          outstanding.push(...jobs.map((job) => ({ job, until: now + 1_000 })))
          return jobs
        }
        try {
          for (const o of ops) {
            now += 100
            if (o.kind === 'enqueue') {
              await q.enqueue(
                o.users.map((u) => {
                  const e = event(seq++, { userKey: `u${u}`, receivedAt: now })
                  userOf.set(e.messageId, u)
                  return e
                })
              )
            } else if (o.kind === 'lease') await lease(o.limit)
            else if (o.kind === 'recover') {
              now += o.after
              await q.recoverLeases(now)
              outstanding = outstanding.filter((x) => x.until > now)
            } else if (o.kind === 'crash') {
              for (const x of outstanding) mayRepeat.add(x.job.messageId)
              outstanding = []
              q = await factory.crash(q)
            } else {
              const picked = [...new Set(o.pick.map((i) => i % Math.max(1, outstanding.length)))]
                .map((i) => outstanding[i])
                .filter((x) => x !== undefined)
              outstanding = outstanding.filter((x) => !picked.includes(x))
              const jobs = picked.map((x) => x.job)
              if (o.kind === 'complete') {
                await q.complete(jobs)
                jobs.forEach(finish)
              } else if (o.kind === 'dead') {
                await q.deadLetter(jobs, { reason: 'refused', sent: true }, now)
                jobs.forEach(finish)
              } else if (o.kind === 'retry') await q.retry(jobs, now + 500, 'boom', now)
              else await q.release(jobs, now)
            }
          }
          // Then everything is delivered.
          for (let round = 0; round < 200 && finished.size < seq; round++) {
            now += 2_000
            await q.recoverLeases(now)
            outstanding = []
            const jobs = await lease(100)
            await q.complete(jobs)
            jobs.forEach(finish)
            outstanding = []
          }
          expect(finished.size).toBe(seq)
          for (const [m, times] of finished) if (!mayRepeat.has(m)) expect(times, m).toBe(1)
          const stats = await q.stats(now)
          expect([stats.pending, stats.leased]).toEqual([0, 0])
          expect(await factory.scan(q, now)).toMatchObject({ pending: 0, leased: 0 })
        } finally {
          await q.close()
        }
      }),
      { numRuns: factory.numRuns }
    )
  }, 240_000)
}
