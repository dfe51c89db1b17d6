/**
 * Housekeeping (figures for the gauges, lease recovery, dedup and dead-letter clean-up, compaction) failing is not
 * the queue failing: while the queue takes writes, ingest and delivery go on, and the failure is said once.
 */
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import type { Queue } from '../queue/queue'
import { SqliteQueue } from '../queue/sqlite-queue'
import { RateLimiter, systemClock } from '../rate-limiter'
import { post, startRelay, tempDir, until, type TestRelay } from './helpers'

let fake: FakeOneFlowApi | undefined
let relay: TestRelay | undefined
afterEach(async () => {
  await relay?.stop()
  await fake?.close()
  relay = fake = undefined
})

describe('a housekeeping task that fails', () => {
  it('never turns ingest into 503 while the queue takes writes; its failure and its recovery are each said once', async () => {
    fake = await FakeOneFlowApi.start()
    const queue = new SqliteQueue(join(tempDir(), 'relay.db'))
    // The figures read times out (a statement timeout on a huge table), as long as `slow` says so.
    let slow = true
    const stats = queue.stats.bind(queue)
    queue.stats = (now) =>
      slow ? Promise.reject(new Error('canceling statement due to statement timeout')) : stats(now)
    relay = await startRelay(fake, {}, { queue })
    const lines = () => relay!.logs.records()
    await until(
      () => lines().some((l) => String(l.msg).startsWith('reading queue figures failed')),
      'the failure',
      12_000
    )
    for (let i = 0; i < 5; i++) {
      const res = await post(relay.url, '/v1/track', { event: `E${i}`, userId: 'u1', messageId: `m${i}` })
      expect(res.status).toBe(200)
    }
    expect((await fetch(`${relay.url}/health/ready`)).status).toBe(200)
    await until(() => fake!.accepted.length === 5, 'delivery meanwhile')
    slow = false
    await until(() => lines().some((l) => l.msg === 'reading queue figures: works again'), 'the recovery', 12_000)
    expect(lines().filter((l) => String(l.msg).startsWith('reading queue figures failed'))).toHaveLength(1)
    expect(lines().filter((l) => String(l.msg).startsWith('the queue is failing'))).toEqual([])
  }, 40_000)
})

describe('the shared rate limit failing', () => {
  it('is said once per outage, again after it worked in between, and nothing is lost', async () => {
    fake = await FakeOneFlowApi.start()
    const queue = new SqliteQueue(join(tempDir(), 'relay.db'))
    // A limiter kept in the queue's database (as PostgreSQL's is) that fails while `failing` says so.
    let failing = true
    const local = new RateLimiter(1_000, systemClock)
    ;(queue as Queue).sharedLimiter = () => ({
      acquire: () =>
        failing ? Promise.reject(new Error('canceling statement due to statement timeout')) : local.acquire(),
      throttled: () => local.throttled(),
      get current() {
        return local.current
      }
    })
    relay = await startRelay(fake, {}, { queue })
    const lines = () => relay!.logs.records()
    const failures = () => lines().filter((l) => String(l.msg).startsWith('taking a send slot failed')).length
    const send = async (i: number) =>
      expect((await post(relay!.url, '/v1/track', { event: `E${i}`, userId: 'u1', messageId: `m${i}` })).status).toBe(
        200
      )
    await send(0)
    await until(() => failures() === 1, 'the failure', 12_000)
    failing = false
    await until(() => fake!.accepted.length === 1, 'delivery once it works', 12_000)
    await until(() => lines().some((l) => l.msg === 'taking a send slot: works again'), 'the recovery')
    failing = true
    await send(1)
    await until(() => failures() === 2, 'the second outage said', 12_000)
    failing = false
    await until(() => fake!.accepted.length === 2, 'delivery again', 12_000)
    expect(lines().filter((l) => String(l.msg).startsWith('the queue is failing'))).toEqual([])
  }, 60_000)
})

describe('delivery held back by something outside the relays', () => {
  it('is said once when it starts (with the queue’s reason) and once when it ends', async () => {
    fake = await FakeOneFlowApi.start()
    const queue: Queue = new SqliteQueue(join(tempDir(), 'relay.db'))
    // What a PostgreSQL queue reports while a write transaction left open elsewhere holds its inbox back.
    let held: string | undefined = 'delivery of p waits for a write transaction left open on the PostgreSQL server'
    queue.deliveryHeldBack = () => held
    relay = await startRelay(fake, {}, { queue })
    const said = (text: RegExp) => relay!.logs.records().filter((l) => text.test(String(l.msg)))
    await until(() => said(/waits for a write transaction/).length > 0, 'the warning', 12_000)
    // Two more readings of the figures (every 5 s) say nothing new.
    await new Promise((resolve) => setTimeout(resolve, 10_500))
    expect(said(/waits for a write transaction/)).toHaveLength(1)
    expect(said(/waits for a write transaction/)[0]).toMatchObject({ level: 40 })
    held = undefined
    await until(() => said(/no longer waits/).length > 0, 'the all-clear', 12_000)
    expect(said(/no longer waits/)).toHaveLength(1)
  }, 40_000)
})
