/** Delivery rules (docs/delivery.md), each with the fault injected at the fake 1Flow API. */
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { post, PROJECT_KEY, startRelay, tempDir, until, WRITE_KEY, type TestRelay } from './helpers'
import { projectIdOf } from '../config'
import { SqliteQueue } from '../queue/sqlite-queue'
import { systemClock } from '../rate-limiter'

let fake: FakeOneFlowApi
let relay: TestRelay | undefined
beforeEach(async () => {
  fake = await FakeOneFlowApi.start()
})
afterEach(async () => {
  await relay?.stop()
  relay = undefined
  await fake.close()
})

const track = (event: string, userId = 'u1', extra: Record<string, unknown> = {}) => ({
  event,
  userId,
  messageId: `${userId}-${event}`,
  ...extra
})
const metric = async (name: string) =>
  (await (await fetch(`${relay!.url}/metrics`)).text()).split('\n').filter((l) => l.startsWith(name))
const events = () => fake.accepted.map((m) => String(m.body.event))

describe('retries', () => {
  it('Retry-After pauses the project: no request before it expires, then delivery', async () => {
    relay = await startRelay(fake)
    fake.inject({ kind: 'status', status: 429, retryAfter: '2' })
    await post(relay.url, '/v1/track', track('A'))
    await until(() => fake.requests.length === 1, 'the first attempt')
    await post(relay.url, '/v1/track', track('B', 'u2'))
    await until(() => fake.accepted.length === 2, 'delivery after the pause', 8_000)
    const [first, ...rest] = fake.requests
    expect(first?.status).toBe(429)
    for (const r of rest) expect(r.at - first!.at).toBeGreaterThanOrEqual(2000 - 5)
    expect(events().sort()).toEqual(['A', 'B'])
  })

  it('a 429 without Retry-After cuts the send rate by 30% and retries with jitter', async () => {
    relay = await startRelay(fake, { oneflow: { maxRequestsPerSecond: 100 } })
    fake.inject({ kind: 'status', status: 429 })
    await post(relay.url, '/v1/track', track('A'))
    await until(() => fake.requests.length === 1, 'the first attempt')
    expect(await metric('relay_send_rate_limit')).toEqual(['relay_send_rate_limit{project="web"} 70'])
    await until(() => fake.accepted.length === 1, 'the retry', 5_000)
    expect(fake.requests[1]!.at - fake.requests[0]!.at).toBeGreaterThanOrEqual(1000 - 5)
  })

  it.each([
    ['500', { kind: 'status', status: 500 } as const],
    ['503', { kind: 'status', status: 503 } as const],
    ['a dropped connection', { kind: 'drop' } as const]
  ])('retries after %s and delivers', async (_what, fault) => {
    relay = await startRelay(fake)
    fake.inject({ ...fault, times: 2 })
    await post(relay.url, '/v1/track', track('A'))
    await until(() => fake.accepted.length === 1, 'delivery after two failures', 8_000)
    expect(fake.requests).toHaveLength(3)
    expect((await metric('relay_delivery_retries_total')).join()).toMatch(/reason="error"\} 2/)
  })

  it('backs the whole project off while 1Flow keeps failing, instead of hammering it', async () => {
    relay = await startRelay(fake, { oneflow: { mode: 'single' } })
    fake.inject({ kind: 'status', status: 503, times: 1000 })
    await post(relay.url, '/v1/batch', {
      batch: Array.from({ length: 50 }, (_, i) => ({ type: 'track', ...track(`E${i}`, `u${i}`) }))
    })
    await new Promise((r) => setTimeout(r, 3000))
    // Three failures in a row, then jittered pauses of 0.5 s and up: a handful of requests, not hundreds.
    expect(fake.requests.length).toBeGreaterThanOrEqual(3)
    expect(fake.requests.length).toBeLessThanOrEqual(10)
    expect((await relay.relay.queue.stats(Date.now())).pending).toBe(50)
  })

  it('gives up after the retry window and dead-letters the event (never a silent drop)', async () => {
    // The relay's clock jumps past the window once the first attempt has failed.
    let offset = 0
    const clock = { now: () => Date.now() + offset, sleep: systemClock.sleep }
    relay = await startRelay(fake, { limits: { giveUpAfterHours: 1 } }, { clock })
    fake.inject({ kind: 'status', status: 503, times: 1000 })
    await post(relay.url, '/v1/track', track('A'))
    await until(() => fake.requests.length >= 1, 'the first failed attempt')
    offset = 3_600_000 + 1_000
    await until(async () => (await relay!.relay.queue.stats(Date.now())).dead === 1, 'the dead letter', 10_000)
    const [dead] = await relay.relay.queue.listDead()
    expect(dead?.reason).toMatch(/gave up after .* of retries; last error: 1Flow answered 503/)
    expect(fake.requests.length).toBeGreaterThan(1)
  })

  it("keeps a user's order: later events wait while an earlier one is retried; other users are not held up", async () => {
    relay = await startRelay(fake, { oneflow: { mode: 'single' } })
    fake.inject({ kind: 'status', status: 503, path: '/track' })
    await post(relay.url, '/v1/track', track('A1', 'alice'))
    await until(() => fake.requests.length === 1, 'the failed first attempt')
    await post(relay.url, '/v1/track', track('A2', 'alice'))
    await post(relay.url, '/v1/track', track('B1', 'bob'))
    await until(() => fake.accepted.length === 3, 'all three', 8_000)
    expect(events()).toEqual(['B1', 'A1', 'A2'])
  })
})

describe('refusals', () => {
  it('400 → dead letter with 1Flow response, no retry', async () => {
    relay = await startRelay(fake)
    fake.inject({ kind: 'status', status: 400, body: '{"error":"user_id is not valid"}' })
    await post(relay.url, '/v1/track', track('A'))
    await until(async () => (await relay!.relay.queue.stats(Date.now())).dead === 1, 'the dead letter')
    const [dead] = await relay.relay.queue.listDead()
    expect(dead).toMatchObject({ status: 400, response: '{"error":"user_id is not valid"}', messageId: 'u1-A' })
    await new Promise((r) => setTimeout(r, 800))
    expect(fake.requests).toHaveLength(1)
  })

  it('413 on a batch → split in halves, every event delivered; a lone event refused with 413 → dead letter', async () => {
    relay = await startRelay(fake)
    fake.inject({ kind: 'status', status: 413, path: '/batch' })
    await post(relay.url, '/v1/batch', {
      batch: Array.from({ length: 6 }, (_, i) => ({ type: 'track', ...track(`E${i}`, `u${i}`) }))
    })
    await until(() => fake.accepted.length === 6, 'all six after the split')
    expect(fake.requests.map((r) => r.status)).toEqual([413, 200, 200])
    fake.inject({ kind: 'status', status: 413, path: '/batch' })
    await post(relay.url, '/v1/track', track('Lone', 'u9'))
    await until(async () => (await relay!.relay.queue.stats(Date.now())).dead === 1, 'the dead letter')
    expect((await relay.relay.queue.listDead())[0]).toMatchObject({ status: 413, messageId: 'u9-Lone' })
  })

  it('400 on a batch → split like 413 until the refused event is alone: its neighbours delivered, it dead-lettered after one send of its own', async () => {
    relay = await startRelay(fake)
    fake.inject({ kind: 'status', status: 400, bodyContains: 'E3', times: 100, body: '{"error":"bad event"}' })
    await post(relay.url, '/v1/batch', {
      batch: Array.from({ length: 6 }, (_, i) => ({ type: 'track', ...track(`E${i}`, `u${i}`) }))
    })
    await until(async () => (await relay!.relay.queue.stats(Date.now())).dead === 1, 'the dead letter')
    await until(() => fake.accepted.length === 5, 'the five others')
    expect(fake.accepted.map((m) => m.body.event).sort()).toEqual(['E0', 'E1', 'E2', 'E4', 'E5'])
    // [E0…E5] → [E0 E1 E2] delivered | [E3 E4 E5] refused → [E3 E4] refused → [E3] refused alone, then [E4], then [E5].
    expect(fake.requests.map((r) => r.status)).toEqual([400, 200, 400, 400, 400, 200, 200])
    const [dead] = await relay.relay.queue.listDead()
    expect(dead).toMatchObject({ status: 400, messageId: 'u3-E3', attempts: 1, response: '{"error":"bad event"}' })
  })

  it('401 → pause, alert in logs and /health, probe with backoff, lose nothing once the key works', async () => {
    fake.removeApiKey('test-project-key')
    relay = await startRelay(fake)
    await post(relay.url, '/v1/batch', {
      batch: Array.from({ length: 5 }, (_, i) => ({ type: 'track', ...track(`E${i}`, `u${i}`) }))
    })
    await until(() => fake.requests.length === 1, 'the refused attempt')
    const health = (await (await fetch(`${relay.url}/health`)).json()) as {
      alerts: Array<{ source: string; alert: string }>
    }
    expect(health.alerts).toEqual([expect.objectContaining({ source: 'web', alert: expect.stringContaining('401') })])
    expect((await fetch(`${relay.url}/health/ready`)).status).toBe(200)
    expect(relay.logs.records().some((r) => r.level === 50 && String(r.msg).startsWith('ALERT'))).toBe(true)
    await new Promise((r) => setTimeout(r, 1500))
    expect(fake.requests).toHaveLength(1)
    fake.addApiKey('test-project-key')
    await until(() => fake.accepted.length === 5, 'every event after the key works', 10_000)
    const after = (await (await fetch(`${relay.url}/health`)).json()) as { alerts: unknown[] }
    expect(after.alerts).toEqual([])
    expect((await relay.relay.queue.stats(Date.now())).dead).toBe(0)
  })
})

describe('a wrong project key answered 404', () => {
  it('pauses the lane like 401/403 with a remedy naming the project key, dead-letters nothing, and resumes once 1Flow accepts', async () => {
    fake.inject({ kind: 'status', status: 404, times: 2, body: '{"error":"project not found"}' })
    relay = await startRelay(fake)
    await post(relay.url, '/v1/batch', {
      batch: Array.from({ length: 4 }, (_, i) => ({ type: 'track', ...track(`E${i}`, `u${i}`) }))
    })
    await until(() => fake.requests.length >= 1, 'the refused attempt')
    const health = (await (await fetch(`${relay.url}/health`)).json()) as {
      alerts: Array<{ alert: string }>
      queue: { lanes: Record<string, number> }
    }
    // The lane is named as everywhere else (the source's name), not by its internal id.
    expect(health.queue.lanes).toEqual({ web: 4 })
    expect(health.alerts).toEqual([
      expect.objectContaining({ alert: expect.stringMatching(/answered 404: nothing found for the project API key/) })
    ])
    // Probed with backoff, then delivered whole: nothing was dead-lettered for a wrong key.
    await until(() => fake.accepted.length === 4, 'every event once 1Flow accepts', 20_000)
    expect((await relay.relay.queue.stats(Date.now())).dead).toBe(0)
  }, 30_000)
})

describe('redirects', () => {
  it('a 307 to another host is never followed with the api_key, never counted delivered: the lane pauses with an alert until 1Flow stops redirecting', async () => {
    const elsewhere = await FakeOneFlowApi.start()
    try {
      fake.inject({ kind: 'status', status: 307, location: `${elsewhere.url}/batch`, times: 1_000_000 })
      relay = await startRelay(fake)
      await post(relay.url, '/v1/batch', {
        batch: Array.from({ length: 3 }, (_, i) => ({ type: 'track', ...track(`E${i}`, `u${i}`) }))
      })
      await until(() => fake.requests.length === 1, 'the redirected attempt')
      await new Promise((r) => setTimeout(r, 500))
      expect(elsewhere.requests).toEqual([])
      expect(fake.accepted).toEqual([])
      const health = (await (await fetch(`${relay.url}/health`)).json()) as { alerts: Array<{ alert: string }> }
      expect(health.alerts).toEqual([
        expect.objectContaining({
          alert: `1Flow answered 307 (a redirect to http://127.0.0.1:${elsewhere.port}); redirects are not followed with the project API key: check the API base URL`
        })
      ])
      expect(await metric('relay_paused{project="web",reason="redirect"}')).toEqual([
        'relay_paused{project="web",reason="redirect"} 1'
      ])
      expect(await metric('relay_delivery_events_total')).toEqual([])
      const queued = await relay.relay.queue.stats(Date.now())
      expect(queued.pending + queued.leased).toBe(3)
      expect(queued.dead).toBe(0)
      // 1Flow stops redirecting: the next probe (5 s) goes through and the rest follows.
      fake.reset()
      await until(() => fake.accepted.length === 3, 'delivery once 1Flow stops redirecting', 15_000)
      expect(elsewhere.requests).toEqual([])
      expect((await (await fetch(`${relay.url}/health`)).json()) as { alerts: unknown[] }).toMatchObject({ alerts: [] })
    } finally {
      await elsewhere.close()
    }
  }, 30_000)
})

describe('rate limit and skips', () => {
  it('never sends more than maxRequestsPerSecond to a project in any second', async () => {
    relay = await startRelay(fake, { oneflow: { mode: 'single', maxRequestsPerSecond: 25 } })
    await post(relay.url, '/v1/batch', {
      batch: Array.from({ length: 75 }, (_, i) => ({ type: 'track', ...track(`E${i}`, `u${i}`) }))
    })
    await until(() => fake.accepted.length === 75, 'all 75 events', 10_000)
    expect(fake.maxRequestsInWindow(1000)).toBeLessThanOrEqual(25)
  })

  it('counts skips by reason and sends nothing for them; 1Flow being down never makes the relay unready', async () => {
    relay = await startRelay(fake)
    fake.inject({ kind: 'status', status: 503, times: 1000 })
    await post(relay.url, '/v1/page', { userId: 'u1', name: 'Home' })
    await post(relay.url, '/v1/identify', { anonymousId: 'a1', traits: {} })
    await until(async () => (await metric('relay_skipped_events_total')).length === 2, 'two skips')
    expect((await metric('relay_skipped_events_total')).sort()).toEqual([
      'relay_skipped_events_total{project="web",reason="missing-user-id"} 1',
      'relay_skipped_events_total{project="web",reason="not-subscribed"} 1'
    ])
    expect(fake.requests).toEqual([])
    expect((await fetch(`${relay.url}/health/ready`)).status).toBe(200)
  })
})

describe('a split batch whose first half must wait', () => {
  it.each([
    ['503', { kind: 'status', status: 503 } as const],
    ['401', { kind: 'status', status: 401 } as const]
  ])(
    'a 413, then %s for the first half: the second half is kept and delivered later, never dropped',
    async (_what, fault) => {
      fake.inject({ kind: 'status', status: 413, path: '/batch' })
      fake.inject(fault)
      relay = await startRelay(fake)
      await post(relay.url, '/v1/batch', {
        batch: Array.from({ length: 6 }, (_, i) => ({ type: 'track', ...track(`E${i}`, `u${i}`) }))
      })
      await until(() => fake.accepted.length >= 6, 'every event', 20_000)
      expect(events().sort()).toEqual(['E0', 'E1', 'E2', 'E3', 'E4', 'E5'])
      expect(fake.requests.slice(0, 2).map((r) => r.status)).toEqual([413, fault.status])
      expect((await relay.relay.queue.stats(Date.now())).dead).toBe(0)
    },
    30_000
  )
})

describe('what the requests say', () => {
  it("carry a user agent naming the relay and its version, not Node's default", async () => {
    relay = await startRelay(fake)
    await post(relay.url, '/v1/track', track('A'))
    await until(() => fake.accepted.length === 1, 'delivery')
    // And the metrics say which build runs, and how long events take from ingest to 1Flow.
    expect((await metric('relay_build_info')).join()).toMatch(
      /relay_build_info\{version="[^"]+",node="v\d+\.\d+\.\d+"\} 1/
    )
    expect(await metric('relay_delivery_latency_seconds_count')).toEqual([
      'relay_delivery_latency_seconds_count{project="web"} 1'
    ])
    expect(fake.requests[0]?.headers['user-agent']).toMatch(
      /^oneflow-relay\/\S+ \(\+https:\/\/www\.npmjs\.com\/package\/@oneflow-seg\/relay\)$/
    )
  })
})

describe('leases that last as long as their work', () => {
  it.each([
    // One user's 250 events one request each, 60 ms per answer: 15 s of requests under one lease of 11 s.
    ['single', 250, 60, 2_000, {}],
    // 600 events of 30 KB in requests of at most 480 KB, 400 ms per answer: about 15 s under one lease of 11 s.
    // (Request timeouts of 2 s, not less: on a loaded machine a request answered in 60 or 400 ms can take over a
    // second, and a request given up on is sent again — a duplicate this test is not about.)
    ['batch', 600, 400, 2_000, { blob: 'x'.repeat(30_000) }]
  ] as const)(
    '%s mode with a slow 1Flow: every event once, in order (the lease is renewed before a request would outlive it)',
    async (mode, count, latencyMs, requestTimeoutMs, extra) => {
      fake.setLatency(latencyMs)
      // The first request is refused for a second, so that every event is queued when a lease takes them all.
      fake.inject({ kind: 'status', status: 503, retryAfter: '1' })
      relay = await startRelay(fake, { oneflow: { mode, requestTimeoutMs } })
      const users = mode === 'single' ? 1 : 3
      // Ingest takes at most 500 KB a request: 10 events of 30 KB, or 50 small ones.
      const per = mode === 'single' ? 50 : 10
      for (let at = 0; at < count; at += per)
        expect(
          (
            await post(relay.url, '/v1/batch', {
              batch: Array.from({ length: Math.min(per, count - at) }, (_, i) => ({
                type: 'track',
                ...track(`E${at + i}`, `u${(at + i) % users}`, { properties: extra })
              }))
            })
          ).status
        ).toBe(200)
      await until(() => fake.accepted.length >= count, 'every event', 60_000).catch((e: Error) => {
        throw new Error(
          `${e.message}: ${fake.accepted.length} accepted; ${fake.requests.map((r) => `${r.status}:${r.bytes}`).join(' ')}`
        )
      })
      // Give a duplicate the time to show up: the recovery that would take back an expired lease runs by then.
      await new Promise((r) => setTimeout(r, (3 * requestTimeoutMs + 5_000) / 2 + 500))
      expect(fake.accepted).toHaveLength(count)
      for (let u = 0; u < users; u++) {
        const mine = events()
          .filter((_, i) => String(fake.accepted[i]!.body.user_id) === `u${u}`)
          .map((e) => Number(e.slice(1)))
        expect(mine).toEqual([...mine].sort((a, b) => a - b))
      }
    },
    90_000
  )
})

describe('a damaged queue row', () => {
  it("stops only its lane's leasing at that row: events before it (a retry among them) arrive, the other project keeps delivering, one log line", async () => {
    const dir = tempDir()
    const queue = new SqliteQueue(join(dir, 'queue.db'), { reserveBytes: 64 * 1024 })
    const event = (n: number, projectApiKey: string) => ({
      messageId: `m-${n}`,
      sourceName: projectApiKey === PROJECT_KEY ? 'web' : 'app',
      projectId: projectIdOf(projectApiKey),
      userKey: `u${n}`,
      body: JSON.stringify({ type: 'track', event: `E${n}`, userId: `u${n}` }),
      receivedAt: Date.now()
    })
    fake.addApiKey('app-project-key')
    // web: three requests, then one whose row is damaged, then one more (never delivered: it is after the row).
    for (const n of [1, 2, 3, 4, 5]) await queue.enqueue([event(n, PROJECT_KEY)])
    const db = new Database(join(dir, 'queue.db'))
    db.prepare('UPDATE inbox SET body = substr(body, 1, length(body) - 3) WHERE body LIKE \'%"m-4"%\'').run()
    db.close()
    // The first request to 1Flow fails: its events are retried (from the events table) while the lane is stopped.
    fake.inject({ kind: 'status', status: 500 })
    const leases = new Map<string, number>()
    let refused = 0
    const lease = queue.lease.bind(queue)
    queue.lease = async (projectId, ...rest) => {
      leases.set(projectId, (leases.get(projectId) ?? 0) + 1)
      return lease(projectId, ...rest).catch((error: unknown) => {
        refused++
        throw error
      })
    }
    relay = await startRelay(
      fake,
      {
        sources: [
          { name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY },
          { name: 'app', writeKey: 'wk_app_0123456789', projectApiKey: 'app-project-key' }
        ]
      },
      { queue, random: () => 0 }
    )
    const started = Date.now()
    for (let n = 6; n <= 8; n++) await queue.enqueue([event(n, 'app-project-key')])
    relay.relay.deliverer.poke()
    await until(() => fake.accepted.length === 6, 'E1–E3 (retried) and the other project delivered')
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    expect(events().sort()).toEqual(['E1', 'E2', 'E3', 'E6', 'E7', 'E8'])
    // The stopped lane tries again at most once a second; the other lane is not held to that pace.
    expect(refused).toBeGreaterThanOrEqual(1)
    expect(refused).toBeLessThanOrEqual((Date.now() - started) / 1_000 + 1)
    expect(leases.get(projectIdOf('app-project-key')) ?? 0).toBeGreaterThan(2 * refused)
    const logged = relay.logs.records().filter((r) => r.msg && /inbox row \d+ .* cannot be read/.test(String(r.msg)))
    expect(logged).toHaveLength(1)
    expect((await queue.stats(Date.now())).lanes[projectIdOf(PROJECT_KEY)]).toBe(2)
  })
})
