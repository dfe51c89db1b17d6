/** The ingest side: Segment's HTTP Tracking API as clients expect it, over real HTTP. */
import { join } from 'node:path'
import { deflateRawSync, deflateSync, gzipSync } from 'node:zlib'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { parseConfig, projectIdOf } from '../config'
import { acceptRequest, writeKeyFromBasic, type Accepted } from '../ingest'
import { SqliteQueue } from '../queue/sqlite-queue'
import { post, PROJECT_KEY, startRelay, tempDir, until, WRITE_KEY, type TestRelay } from './helpers'

let fake: FakeOneFlowApi
let relay: TestRelay
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
  relay = await startRelay(fake)
})
afterAll(async () => {
  await relay.stop()
  await fake.close()
})
beforeEach(() => fake.reset())

const basic = (key: string) => `Basic ${Buffer.from(`${key}:`).toString('base64')}`
const track = (extra: Record<string, unknown> = {}) => ({
  event: 'Signed Up',
  userId: 'u1',
  properties: { plan: 'pro' },
  ...extra
})

describe('authentication', () => {
  it('takes the write key as HTTP Basic username or in the body', async () => {
    expect((await post(relay.url, '/v1/track', track())).status).toBe(200)
    expect((await post(relay.url, '/v1/track', { ...track(), writeKey: WRITE_KEY }, null)).status).toBe(200)
    // Both are delivered (and within this test, so that later tests count only their own).
    await until(() => fake.accepted.length === 2, 'both events at 1Flow')
    expect(fake.accepted.map((m) => m.body.event)).toEqual(['Signed Up', 'Signed Up'])
  })

  it.each([
    ['unknown', 'nope', 'unknown_write_key'],
    ['missing', null, 'missing_write_key']
  ] as const)('answers 401 for a %s write key and stores nothing', async (_what, key, code) => {
    const res = await post(relay.url, '/v1/track', track(), key)
    expect(res.status).toBe(401)
    expect(res.body.code).toBe(code)
    expect(JSON.stringify(res.body)).not.toContain('nope')
  })
})

describe('envelope: refused whole with 400 and a JSON error naming the rule', () => {
  it.each([
    [
      'an event over 32 KB on a single-event route',
      '/v1/track',
      track({ properties: { blob: 'x'.repeat(33_000) } }),
      'request_too_large',
      { limit: 32 * 1024 }
    ],
    [
      'a batch request over 500 KB',
      '/v1/batch',
      {
        batch: Array.from({ length: 20 }, () => ({
          type: 'track',
          ...track({ properties: { blob: 'y'.repeat(30_000) } })
        }))
      },
      'request_too_large',
      { limit: 500 * 1024 }
    ],
    [
      'more than 2,500 events',
      '/v1/batch',
      { batch: Array.from({ length: 2501 }, () => ({ type: 'track', event: 'E', userId: 'u' })) },
      'batch_too_long',
      { limit: 2500 }
    ],
    ['invalid JSON', '/v1/track', '{"event": "Signed Up",', 'invalid_json', {}],
    ['a batch that is not an array', '/v1/b', { batch: { type: 'track' } }, 'invalid_batch', {}],
    ['a body that is not an object', '/v1/identify', '[1,2]', 'invalid_body', {}]
  ])('refuses %s', async (_what, path, body, code, extra) => {
    const res = await post(relay.url, path, body)
    expect(res.status).toBe(400)
    expect(res.body).toMatchObject({ code, ...extra })
    expect(String(res.body.error)).not.toBe('')
  })
})

describe('events: each bad one rejected on its own, the good ones kept (200)', () => {
  const good = (n: number, tag: string) => ({
    type: 'track',
    ...track({ messageId: `${tag}-good-${n}`, event: `Good ${n}` })
  })
  it.each([
    ['neither userId nor anonymousId', { type: 'identify', traits: {} }, 'missing_identity'],
    ['a track without an event name', { type: 'track', userId: 'u1' }, 'missing_event_name'],
    ['a track with an empty event name', { type: 'track', userId: 'u1', event: ' ' }, 'missing_event_name'],
    ['an unknown type', { type: 'purchase', userId: 'u1' }, 'invalid_type'],
    ['an event that is not an object', 42, 'invalid_event'],
    [
      'a messageId of 100 characters',
      { type: 'track', ...track({ messageId: 'm'.repeat(100) }) },
      'invalid_message_id'
    ],
    [
      'an event over 32 KB',
      { type: 'track', ...track({ properties: { blob: 'x'.repeat(33_000) } }) },
      'event_too_large'
    ],
    [
      'an event nested 70 levels deep',
      { type: 'track', ...track({ properties: JSON.parse(`${'{"a":'.repeat(70)}1${'}'.repeat(70)}`) }) },
      'too_deep'
    ]
  ])('%s in a batch: rejected, reported, dead-lettered; its neighbours delivered', async (_what, bad, code) => {
    const deadBefore = (await relay.relay.queue.listDead({ limit: 10_000 })).length
    const res = await post(relay.url, '/v1/batch', { batch: [good(1, _what), bad, good(2, _what)] })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({
      success: true,
      rejected: [{ index: 1, code, error: expect.stringMatching(/^event 1 /) }]
    })
    await until(() => fake.accepted.length === 2, 'the two good events at 1Flow')
    expect(fake.accepted.map((m) => m.body.event)).toEqual(['Good 1', 'Good 2'])
    const dead = (await relay.relay.queue.listDead({ limit: 10_000 })).slice(deadBefore)
    expect(dead).toHaveLength(1)
    expect(dead[0]!.reason).toMatch(new RegExp(`^rejected at ingest \\(${code}\\): event 1 `))
    expect(dead[0]!.body).not.toContain(WRITE_KEY)
    const metrics = await (await fetch(`${relay.url}/metrics`)).text()
    expect(metrics).toMatch(new RegExp(`relay_ingest_rejected_total\\{reason="${code}"\\} [1-9]`))
    expect(relay.logs.text).toMatch(
      new RegExp(
        `rejected 1 of 3 event\\(s\\) at ingest.*"index":1,"code":"${code}"|"index":1,"code":"${code}".*rejected 1 of 3`
      )
    )
  })

  it('a single-event route answers as Segment does: 200 with the event rejected (not delivered, kept as a dead letter)', async () => {
    const res = await post(relay.url, '/v1/t', { userId: 'u1', properties: {} })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({
      success: true,
      rejected: [
        { index: 0, code: 'missing_event_name', error: 'the event is a track without an event name ("event")' }
      ]
    })
    const dead = await relay.relay.queue.listDead({ limit: 10_000 })
    expect(dead.at(-1)!.reason).toBe(
      'rejected at ingest (missing_event_name): the event is a track without an event name ("event")'
    )
    expect(fake.accepted).toEqual([])
  })

  it('a batch of nothing but bad events is still answered 200, each reported', async () => {
    const res = await post(relay.url, '/v1/import', { batch: [{ type: 'track' }, { type: 'identify' }] })
    expect(res.status).toBe(200)
    expect((res.body.rejected as Array<{ code: string }>).map((r) => r.code)).toEqual([
      'missing_identity',
      'missing_identity'
    ])
  })
})

describe('limits', () => {
  it('accepts exactly 2,500 events and a messageId of 99 characters', async () => {
    expect(
      (
        await post(relay.url, '/v1/batch', {
          batch: Array.from({ length: 2500 }, (_, i) => ({ type: 'track', event: 'E', userId: `u${i}` }))
        })
      ).status
    ).toBe(200)
    expect((await post(relay.url, '/v1/track', track({ messageId: 'm'.repeat(99) }))).status).toBe(200)
    await until(() => fake.accepted.length === 2501, 'all 2,501 events at 1Flow')
  })

  it('accepts every Segment call type on its route, and /v1/import as /v1/batch', async () => {
    for (const [path, body] of [
      ['/v1/identify', { userId: 'u1', traits: { a: 1 } }],
      ['/v1/page', { userId: 'u1', name: 'Home' }],
      ['/v1/screen', { userId: 'u1', name: 'Home' }],
      ['/v1/group', { userId: 'u1', groupId: 'g1' }],
      ['/v1/alias', { userId: 'u1', previousId: 'a1' }],
      ['/v1/import', { batch: [{ type: 'track', event: 'Imported', userId: 'u1' }] }]
    ] as const) {
      const res = await post(relay.url, path, body)
      expect(res.status, path).toBe(200)
      expect(res.body).toEqual({ success: true })
    }
    // Presets: only identify and track reach 1Flow.
    await until(() => fake.accepted.length === 2, 'identify and the imported track')
    expect(fake.accepted.map((m) => m.type).sort()).toEqual(['identify', 'track'])
  })

  it('deduplicates on messageId: a re-sent event is acknowledged but delivered once', async () => {
    for (let i = 0; i < 3; i++)
      expect((await post(relay.url, '/v1/track', track({ messageId: 'dup-1' }))).status).toBe(200)
    await post(relay.url, '/v1/batch', {
      batch: [
        { type: 'track', ...track({ messageId: 'dup-1' }) },
        { type: 'track', ...track({ messageId: 'dup-2' }) }
      ]
    })
    await until(() => fake.accepted.length >= 2, 'two events')
    await new Promise((r) => setTimeout(r, 300))
    expect(fake.accepted).toHaveLength(2)
  })
})

describe('every path and body Segment clients send', () => {
  it("takes analytics.js's short paths (/v1/i, /v1/t, /v1/p, /v1/s, /v1/g, /v1/a, /v1/b) as the long ones, with the write key in a text/plain body", async () => {
    const send = (path: string, body: Record<string, unknown>) =>
      fetch(`${relay.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain' },
        body: JSON.stringify({ ...body, writeKey: WRITE_KEY })
      })
    for (const [path, body] of [
      ['/v1/i', { userId: 'short-1', traits: { a: 1 } }],
      ['/v1/t', { userId: 'short-1', event: 'Short Track' }],
      ['/v1/p', { userId: 'short-1', name: 'Home' }],
      ['/v1/s', { userId: 'short-1', name: 'Home' }],
      ['/v1/g', { userId: 'short-1', groupId: 'g1' }],
      ['/v1/a', { userId: 'short-1', previousId: 'a1' }],
      ['/v1/b', { batch: [{ type: 'track', event: 'Short Batch', userId: 'short-1' }] }]
    ] as const) {
      const res = await send(path, body)
      expect(res.status, path).toBe(200)
    }
    await until(() => fake.accepted.length === 3, 'identify and the two tracks')
    expect(fake.accepted.map((m) => m.body.event ?? m.type)).toEqual(['identify', 'Short Track', 'Short Batch'])
  })

  it.each([
    ['gzip', '/v1/import', gzipSync],
    ['gzip', '/v1/batch', gzipSync],
    ['deflate', '/v1/import', deflateSync],
    ['deflate', '/v1/batch', deflateSync],
    ['deflate', '/v1/batch', deflateRawSync]
  ] as const)('reads a %s body on %s (Segment Android sends every batch gzipped)', async (encoding, path, compress) => {
    const body = compress(
      Buffer.from(
        JSON.stringify({
          batch: [{ type: 'track', event: `Zipped ${path}`, userId: 'z1', properties: { text: 'ü'.repeat(100) } }]
        })
      )
    )
    const res = await fetch(`${relay.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': encoding, authorization: basic(WRITE_KEY) },
      body
    })
    expect(res.status).toBe(200)
    await until(() => fake.accepted.length === 1, 'the event at 1Flow')
    expect(fake.accepted[0]!.body).toMatchObject({ event: `Zipped ${path}`, properties: { text: 'ü'.repeat(100) } })
  })

  it('refuses a gzip bomb (50 KB that inflates past 500 KB) with a clear 400, without inflating it all', async () => {
    const bomb = gzipSync(
      Buffer.from(
        `{"batch":[{"type":"track","event":"E","userId":"u","properties":{"x":"${'0'.repeat(50 * 1024 * 1024)}"}}]}`
      ),
      { level: 9 }
    )
    expect(bomb.length).toBeLessThan(100 * 1024)
    const before = process.memoryUsage().rss
    const res = await fetch(`${relay.url}/v1/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', authorization: basic(WRITE_KEY) },
      body: bomb
    })
    expect(res.status).toBe(400)
    expect(await res.json()).toEqual({
      error: 'the request body is over 500 KB per batch request once decompressed',
      code: 'request_too_large',
      limit: 500 * 1024
    })
    // 50 MB was never materialised in this process (the relay runs in it).
    expect(process.memoryUsage().rss - before).toBeLessThan(40 * 1024 * 1024)
    expect(fake.accepted).toEqual([])
  })

  it.each([
    ['an encoding it does not know', 'br', Buffer.from('{}'), 415, 'unsupported_encoding'],
    ['bytes that are not gzip', 'gzip', Buffer.from('{"batch":[]}'), 400, 'invalid_encoding'],
    ['a gzip of something that is not JSON', 'gzip', gzipSync(Buffer.from('{"batch":')), 400, 'invalid_json']
  ] as const)('answers %s clearly', async (_what, encoding, body, status, code) => {
    const res = await fetch(`${relay.url}/v1/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': encoding, authorization: basic(WRITE_KEY) },
      body
    })
    expect(res.status).toBe(status)
    expect(await res.json()).toMatchObject({ code, error: expect.any(String) })
  })
})

describe('CORS: on the ingest routes, and only there', () => {
  it('answers preflights with the headers the page asks for', async () => {
    const res = await fetch(`${relay.url}/v1/t`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,content-type,x-custom'
      }
    })
    expect(res.status).toBe(204)
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
    expect(res.headers.get('access-control-allow-methods')).toBe('POST')
    expect(res.headers.get('access-control-allow-headers')).toBe('authorization,content-type,x-custom')
    const answer = await post(relay.url, '/v1/track', track())
    expect(answer.headers.get('access-control-allow-origin')).toBe('*')
    expect(answer.headers.get('access-control-expose-headers')).toBe('retry-after')
  })

  it.each(['/metrics', '/health', '/health/live', '/health/ready'])(
    '%s has no Access-Control-Allow-Origin',
    async (path) => {
      const res = await fetch(`${relay.url}${path}`, { headers: { origin: 'https://evil.example' } })
      expect(res.status).toBe(200)
      expect(res.headers.get('access-control-allow-origin')).toBeNull()
      const preflight = await fetch(`${relay.url}${path}`, {
        method: 'OPTIONS',
        headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' }
      })
      expect(preflight.headers.get('access-control-allow-origin')).toBeNull()
    }
  )
})

describe('an unknown write key in Basic auth', () => {
  it('is answered 401 before the body is read, and the connection closed', async () => {
    const { request } = await import('node:http')
    const { port } = new URL(relay.url)
    const answer = await new Promise<{ status: number; connection: string | undefined; body: string }>(
      (resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: '/v1/batch',
            headers: {
              authorization: basic('not-a-key'),
              'content-type': 'application/json',
              'content-length': '400000'
            }
          },
          (res) => {
            let body = ''
            res.on('data', (d: Buffer) => (body += d.toString()))
            res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }))
          }
        )
        req.on('error', reject)
        // 10 bytes of a promised 400,000: the answer comes anyway.
        req.write('{"batch":[')
      }
    )
    expect(answer.status).toBe(401)
    expect(answer.connection).toBe('close')
    expect(JSON.parse(answer.body)).toEqual({ error: 'unknown write key', code: 'unknown_write_key' })
  })
})

describe('stamping (acceptRequest)', () => {
  const config = parseConfig({ sources: [{ name: 'web', writeKey: 'wk', projectApiKey: 'pk' }] })
  const sources = new Map(config.sources.map((s) => [s.writeKey, s]))
  const now = Date.parse('2026-06-01T12:00:00.000Z')
  const accept = (route: 'track' | 'batch', body: Record<string, unknown>) =>
    acceptRequest(route, { writeKey: 'wk', ...body }, undefined, sources, now, () => 'generated-id') as Accepted
  const stored = (a: Accepted, i = 0) => JSON.parse(a.events[i]!.body) as Record<string, unknown>

  it('stamps receivedAt, assigns a messageId when absent, and never stores the write key', () => {
    const a = accept('track', { event: 'E', userId: 'u1', timestamp: '2026-06-01T11:59:00.000Z' })
    expect(stored(a)).toMatchObject({
      type: 'track',
      messageId: 'generated-id',
      receivedAt: '2026-06-01T12:00:00.000Z',
      timestamp: '2026-06-01T11:59:00.000Z'
    })
    expect(a.events[0]!.body).not.toContain('wk')
    expect(accept('track', { event: 'E', userId: 'u1', messageId: 'mine' }).events[0]!.messageId).toBe('mine')
  })

  it("corrects the client's clock skew as Segment does: timestamp = receivedAt − (sentAt − timestamp)", () => {
    // The client clock is 1 h fast: the event happened 5 s before it was sent.
    const a = accept('batch', {
      sentAt: '2026-06-01T13:00:05.000Z',
      batch: [{ type: 'track', event: 'E', userId: 'u1', timestamp: '2026-06-01T13:00:00.000Z' }]
    })
    expect(stored(a)).toMatchObject({
      timestamp: '2026-06-01T11:59:55.000Z',
      originalTimestamp: '2026-06-01T13:00:00.000Z'
    })
  })

  it('stamps timestamp = receivedAt when the event has none (delivery may come later)', () => {
    expect(stored(accept('track', { event: 'E', userId: 'u1' }))).toMatchObject({
      timestamp: '2026-06-01T12:00:00.000Z'
    })
  })

  it("applies a batch's top-level context and integrations to events that have none", () => {
    const a = accept('batch', {
      context: { app: 'x' },
      integrations: { All: false },
      batch: [
        { type: 'track', event: 'E', userId: 'u1' },
        { type: 'track', event: 'F', userId: 'u1', integrations: {} }
      ]
    })
    expect(stored(a, 0)).toMatchObject({ context: { app: 'x' }, integrations: { All: false } })
    expect(stored(a, 1).integrations).toEqual({})
  })

  it('orders by user: userId, else anonymousId', () => {
    const a = accept('batch', {
      batch: [
        { type: 'track', event: 'E', userId: 7, anonymousId: 'a' },
        { type: 'track', event: 'E', anonymousId: 'anon' }
      ]
    })
    expect(a.events.map((e) => e.userKey)).toEqual(['7', 'anon'])
  })

  it('orders users whose ids differ only in lone surrogates as one user (the databases read such ids back alike)', () => {
    const a = accept('batch', {
      batch: [
        { type: 'track', event: 'E', userId: 'a\ud800' },
        { type: 'track', event: 'E', userId: 'a\ud801' },
        { type: 'track', event: 'E', userId: 'b\ud83d\ude00\u0000' },
        { type: 'track', event: 'E', userId: '\udc00x' }
      ]
    })
    expect(a.events.map((e) => e.userKey)).toEqual(['a\ufffd', 'a\ufffd', 'b\ud83d\ude00', '\ufffdx'])
    // The stored event keeps the id as it was sent.
    expect(JSON.parse(a.events[0]!.body).userId).toBe('a\ud800')
  })

  it('reads the write key from HTTP Basic with or without the trailing colon', () => {
    expect(writeKeyFromBasic(`Basic ${Buffer.from('abc:').toString('base64')}`)).toBe('abc')
    expect(writeKeyFromBasic(`Basic ${Buffer.from('abc').toString('base64')}`)).toBe('abc')
    expect(writeKeyFromBasic('Bearer abc')).toBeUndefined()
    expect(writeKeyFromBasic(`Basic ${Buffer.from(':').toString('base64')}`)).toBeUndefined()
  })
})

describe('disk cap', () => {
  it('lets go once the backlog is delivered: ingest answers 200 again within seconds, without a restart', async () => {
    const down = await FakeOneFlowApi.start()
    down.inject({ kind: 'status', status: 503, retryAfter: '1', times: 1_000_000 })
    const capped = await startRelay(down, { limits: { diskCapBytes: 1024 * 1024 } })
    try {
      let status = 200
      for (let i = 0; i < 200 && status === 200; i++) {
        status = (
          await post(capped.url, '/v1/batch', {
            batch: Array.from({ length: 20 }, (_, j) => ({
              type: 'track',
              event: 'E',
              userId: `c${i}-${j}`,
              properties: { blob: 'z'.repeat(2000) }
            }))
          })
        ).status
      }
      expect(status).toBe(503)
      const full = await capped.relay.queue.liveBytes()
      expect(full).toBeGreaterThan(1024 * 1024)
      // One commit may overshoot the cap (requests already in it), never more.
      expect(full).toBeLessThan(1024 * 1024 + 600 * 1024)
      down.reset()
      const drained = Date.now()
      await until(
        async () => (await post(capped.url, '/v1/track', { event: 'After', userId: 'after' })).status === 200,
        'ingest to accept again',
        20_000
      )
      const recoveredMs = Date.now() - drained
      expect(recoveredMs).toBeLessThan(15_000)
      expect(await capped.relay.queue.liveBytes()).toBeLessThan(1024 * 1024)
      expect((await fetch(`${capped.url}/health/ready`)).status).toBe(200)
    } finally {
      await capped.stop()
      await down.close()
    }
  }, 40_000)

  it('answers 503 with Retry-After once the queue passes its cap, and keeps what it already accepted', async () => {
    const stalled = await FakeOneFlowApi.start()
    stalled.inject({ kind: 'status', status: 503, times: 1_000_000 })
    const capped = await startRelay(stalled, { limits: { diskCapBytes: 1024 * 1024 } })
    try {
      let last = { status: 200, headers: new Headers() }
      for (let i = 0; i < 80 && last.status === 200; i++) {
        last = await post(capped.url, '/v1/batch', {
          batch: Array.from({ length: 15 }, (_, j) => ({
            type: 'track',
            event: 'E',
            userId: `u${i}-${j}`,
            properties: { blob: 'z'.repeat(2000) }
          }))
        })
        if (last.status === 200) await new Promise((r) => setTimeout(r, 30))
      }
      expect(last.status).toBe(503)
      expect(last.headers.get('retry-after')).toBe('60')
      const ready = await fetch(`${capped.url}/health/ready`)
      expect(ready.status).toBe(503)
      expect(
        (await capped.relay.queue.stats(Date.now())).pending + (await capped.relay.queue.stats(Date.now())).leased
      ).toBeGreaterThan(0)
    } finally {
      await capped.stop()
      await stalled.close()
    }
  })
})

describe('ingest between leases', () => {
  it("answers I/O that is waiting before a lane's next lease, not after all of them", async () => {
    const dir = tempDir()
    const queue = new SqliteQueue(join(dir, 'queue.db'), { reserveBytes: 64 * 1024 })
    const lane = projectIdOf(PROJECT_KEY)
    // Six leases' worth of backlog in one lane (500 events a lease, 8 leases in flight allowed).
    await queue.enqueue(
      Array.from({ length: 3_000 }, (_, i) => ({
        messageId: `backlog-${i}`,
        sourceName: 'web',
        projectId: lane,
        userKey: `u${i}`,
        body: JSON.stringify({ type: 'track', event: 'Backlog', userId: `u${i}` }),
        receivedAt: Date.now()
      }))
    )
    const order: string[] = []
    const lease = queue.lease.bind(queue)
    queue.lease = async (...args) => {
      const jobs = await lease(...args)
      // What a client's request is to the relay: I/O ready to be handled once the thread yields.
      if (order.length === 0) setImmediate(() => order.push('io'))
      order.push(`lease of ${jobs.length}`)
      return jobs
    }
    const fakeApi = await FakeOneFlowApi.start()
    const r = await startRelay(fakeApi, {}, { queue })
    try {
      await until(() => order.filter((o) => o !== 'io').length >= 3, 'three leases')
      expect(order.slice(0, 3)).toEqual(['lease of 500', 'io', 'lease of 500'])
    } finally {
      await r.stop()
      await fakeApi.close()
    }
  })
})
