/**
 * Three relay processes on one PostgreSQL database, load spread across them, one of them killed with
 * SIGKILL mid-run: every acknowledged event reaches 1Flow, duplicates come only from what the killed relay
 * had in flight, and the combined request rate seen at 1Flow stays within the one, shared limit. And with a slow
 * 1Flow (110 ms answers in single mode, 400 ms in batch mode) and no fault, every event arrives once, in order. And
 * a pause 1Flow asked of the relay delivering a project holds for the relay that delivers it after.
 */
import { afterAll, beforeAll, expect, inject, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { createDatabase } from '@oneflow-seg/testkit/postgres'
import { post, sql, tempDir, until } from './helpers'
import { freePort, startRelayProcess, writeConfig, type RelayProcess } from './process'
import { projectIdOf } from '../config'
import { DEFAULT_BUCKETS, laneOf } from '../queue/buckets'
import { lockKey } from '../queue/pg-queue'

const WRITE_KEY = 'wk_multi'
const LIMIT = 40
const CONCURRENCY = 2

let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
})
afterAll(() => fake.close())

it('3 relays on one database: nothing acknowledged is lost when one is killed, and the rate limit holds across all', async () => {
  const db = await createDatabase(inject('pgAdminUrl'), `multi_${process.pid}`)
  const ports = await Promise.all([freePort(), freePort(), freePort()])
  const configFor = (port: number) =>
    writeConfig(
      {
        listen: { host: '127.0.0.1', port },
        queue: db,
        oneflow: {
          apiBaseUrl: fake.url,
          mode: 'single',
          maxRequestsPerSecond: LIMIT,
          concurrency: CONCURRENCY,
          requestTimeoutMs: 1000
        },
        sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: 'test-project-key' }]
      },
      tempDir()
    )
  // Started together: schema migrations run concurrently and must not collide.
  const relays: RelayProcess[] = await Promise.all(ports.map((port) => startRelayProcess(configFor(port), port)))

  const acked = new Set<string>()
  let seq = 0
  const sendBatch = async (relay: RelayProcess) => {
    const ids = Array.from({ length: 10 }, () => `e${seq++}`)
    const batch = ids.map((id) => ({
      type: 'track',
      event: 'Multi',
      userId: `user-${id}`,
      messageId: id,
      properties: { id }
    }))
    const res = await post(relay.url, '/v1/batch', { batch }, WRITE_KEY).catch(() => undefined)
    if (res?.status === 200) ids.forEach((id) => acked.add(id))
  }
  // 60 batches round-robin over the three relays; the second relay is killed a third of the way in.
  for (let i = 0; i < 60; i++) {
    if (i === 20) {
      relays[1]!.child.kill('SIGKILL')
      expect(await relays[1]!.exited).toBe('SIGKILL')
    }
    const alive = relays.filter((r) => r.child.exitCode === null && r.child.signalCode === null)
    await sendBatch(alive[i % alive.length]!)
    await new Promise((r) => setTimeout(r, 50))
  }
  expect(acked.size).toBeGreaterThanOrEqual(580)

  const ids = () => fake.accepted.map((m) => String((m.body.properties as { id: string }).id))
  await until(
    () => {
      const seen = new Set(ids())
      return [...acked].every((id) => seen.has(id))
    },
    'every acknowledged event at 1Flow',
    90_000
  )
  const delivered = ids()
  const duplicates = delivered.length - new Set(delivered).size
  // Only what the killed relay had leased can be sent twice: at most its concurrency × one lease.
  expect(duplicates).toBeLessThanOrEqual(CONCURRENCY * LIMIT)
  expect(fake.maxRequestsInWindow(1000)).toBeLessThanOrEqual(LIMIT)
  for (const r of relays) r.child.kill('SIGTERM')
  await Promise.all(relays.filter((r) => r !== relays[1]).map((r) => r.exited))
}, 150_000)

it.each([
  ['single', 110],
  ['batch', 400]
] as const)(
  '3 relays on one database, %s mode, 1Flow answering in %i ms: every event once, each user in order',
  async (mode, latencyMs) => {
    fake.reset()
    fake.setLatency(latencyMs)
    const db = await createDatabase(inject('pgAdminUrl'), `multi_slow_${mode}_${process.pid}`)
    // Request timeouts of 3 s: a loaded machine can take over a second to answer in 110 ms, and a request given up
    // on is sent again, a duplicate this test is not about.
    const relays = await relaysOn(db, 3, { mode, maxRequestsPerSecond: 50, concurrency: 2, requestTimeoutMs: 3_000 })
    try {
      // 24 requests of 10 events for 12 users, round-robin over the relays, each sent once the one before it was
      // acknowledged: the order of a user's events is the order sent.
      const count = 240
      for (let r = 0; r < count / 10; r++) {
        const batch = Array.from({ length: 10 }, (_, i) => {
          const n = r * 10 + i
          return { type: 'track', event: 'Slow', userId: `user-${n % 12}`, messageId: `s${n}`, properties: { n } }
        })
        expect((await post(relays[r % 3]!.url, '/v1/batch', { batch }, WRITE_KEY)).status).toBe(200)
      }
      const delivered = () => fake.accepted.map((m) => Number((m.body.properties as { n: number }).n))
      await until(() => new Set(delivered()).size >= count, 'every event at 1Flow', 90_000)
      // Long enough for a lease that had expired under its requests to be taken back and sent again.
      await new Promise((r) => setTimeout(r, 6_000))
      expect(delivered()).toHaveLength(count)
      for (let u = 0; u < 12; u++) {
        const mine = delivered().filter((n) => n % 12 === u)
        expect(mine).toEqual([...mine].sort((a, b) => a - b))
      }
    } finally {
      for (const r of relays) r.child.kill('SIGTERM')
      await Promise.all(relays.map((r) => r.exited))
      fake.setLatency(0)
    }
  },
  150_000
)

/** `count` relay processes on database `db`, with these settings for 1Flow. */
async function relaysOn(db: string, count: number, oneflow: Record<string, unknown>): Promise<RelayProcess[]> {
  const ports = await Promise.all(Array.from({ length: count }, () => freePort()))
  return Promise.all(
    ports.map((port) =>
      startRelayProcess(
        writeConfig(
          {
            listen: { host: '127.0.0.1', port },
            queue: db,
            oneflow: { apiBaseUrl: fake.url, ...oneflow },
            sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: 'test-project-key' }]
          },
          tempDir()
        ),
        port
      )
    )
  )
}

it('2 relays on one database: the one that heard Retry-After dies; the other sends nothing to 1Flow before the pause ends, then everything', async () => {
  fake.reset()
  const db = await createDatabase(inject('pgAdminUrl'), `multi_pause_${process.pid}`)
  const relays = await relaysOn(db, 2, { maxRequestsPerSecond: 50, requestTimeoutMs: 3_000 })
  // The first five are one user's: in one bucket, whose owner hears the 429 (the project is spread over buckets).
  const batch = (from: number) =>
    Array.from({ length: 5 }, (_, i) => ({
      type: 'track',
      event: 'Paused',
      userId: from === 0 ? 'user-0' : `user-${from + i}`,
      messageId: `p${from + i}`,
      properties: { n: from + i }
    }))
  try {
    fake.inject({ kind: 'status', status: 429, retryAfter: '6', times: 1 })
    expect((await post(relays[0]!.url, '/v1/batch', { batch: batch(0) }, WRITE_KEY)).status).toBe(200)
    await until(() => fake.requests.some((r) => r.status === 429), '1Flow answering 429', 20_000)
    const paused = fake.requests.find((r) => r.status === 429)!.at
    // The relay that heard it has written the pause down; then it dies.
    await until(
      async () => (await sql(db, 'SELECT max(paused_until) AS p FROM relay_lanes'))[0]?.p != null,
      'the pause recorded',
      10_000
    )
    const lane = laneOf(projectIdOf('test-project-key'), 'user-0', DEFAULT_BUCKETS)
    const owner = await sql(
      db,
      `SELECT a.application_name AS name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
       WHERE l.locktype = 'advisory' AND l.granted AND l.objid = ${lockKey(`leasing:${lane}`) >>> 0}`
    )
    expect(owner).toHaveLength(1)
    const dying = relays.find((r) => owner.some((o) => String(o.name).endsWith(` ${r.child.pid}`)))!
    dying.child.kill('SIGKILL')
    await dying.exited
    const survivor = relays.find((r) => r !== dying)!
    expect((await post(survivor.url, '/v1/batch', { batch: batch(5) }, WRITE_KEY)).status).toBe(200)
    const delivered = () => new Set(fake.accepted.map((m) => (m.body.properties as { n: number }).n))
    await until(() => delivered().size === 10, 'all 10 events at 1Flow', 60_000)
    // Nothing reached 1Flow between its 429 and the end of the pause it asked for.
    const early = fake.requests.filter((r) => r.at > paused && r.at < paused + 6_000)
    expect(early.map((r) => r.at - paused)).toEqual([])
  } finally {
    for (const r of relays) r.child.kill('SIGTERM')
    await Promise.all(relays.map((r) => r.exited))
  }
}, 90_000)
