/** The ingest side: Segment's HTTP Tracking API as clients expect it, over real HTTP. */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { parseConfig } from '../config'
import { acceptRequest, writeKeyFromBasic, type Accepted } from '../ingest'
import { post, startRelay, until, WRITE_KEY, type TestRelay } from './helpers'

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

const track = (extra: Record<string, unknown> = {}) => ({ event: 'Signed Up', userId: 'u1', properties: { plan: 'pro' }, ...extra })

describe('authentication', () => {
  it('takes the write key as HTTP Basic username or in the body', async () => {
    expect((await post(relay.url, '/v1/track', track())).status).toBe(200)
    expect((await post(relay.url, '/v1/track', { ...track(), writeKey: WRITE_KEY }, null)).status).toBe(200)
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

describe('limits and validation (400 with a JSON error naming the rule)', () => {
  it.each([
    ['an event over 32 KB on a single-event route', '/v1/track', track({ properties: { blob: 'x'.repeat(33_000) } }), 'request_too_large', { limit: 32 * 1024 }],
    ['an event over 32 KB in a batch', '/v1/batch', { batch: [{ type: 'track', ...track() }, { type: 'track', ...track({ properties: { blob: 'x'.repeat(33_000) } }) }] }, 'event_too_large', { index: 1, limit: 32 * 1024 }],
    ['a batch request over 500 KB', '/v1/batch', { batch: Array.from({ length: 20 }, () => ({ type: 'track', ...track({ properties: { blob: 'y'.repeat(30_000) } }) })) }, 'request_too_large', { limit: 500 * 1024 }],
    ['more than 2,500 events', '/v1/batch', { batch: Array.from({ length: 2501 }, () => ({ type: 'track', event: 'E', userId: 'u' })) }, 'batch_too_long', { limit: 2500 }],
    ['invalid JSON', '/v1/track', '{"event": "Signed Up",', 'invalid_json', {}],
    ['neither userId nor anonymousId', '/v1/track', { event: 'E' }, 'missing_identity', {}],
    ['an event in a batch without identity', '/v1/batch', { batch: [{ type: 'track', ...track() }, { type: 'identify', traits: {} }] }, 'missing_identity', { index: 1 }],
    ['a track without an event name', '/v1/track', { userId: 'u1' }, 'missing_event_name', {}],
    ['a track with an empty event name', '/v1/batch', { batch: [{ type: 'track', userId: 'u1', event: ' ' }] }, 'missing_event_name', { index: 0 }],
    ['an unknown type in a batch', '/v1/batch', { batch: [{ type: 'purchase', userId: 'u1' }] }, 'invalid_type', { index: 0 }],
    ['a body that is not an object', '/v1/identify', '[1,2]', 'invalid_body', {}],
    ['a messageId of 100 characters', '/v1/track', track({ messageId: 'm'.repeat(100) }), 'invalid_message_id', { limit: 100 }]
  ])('refuses %s', async (_what, path, body, code, extra) => {
    const res = await post(relay.url, path, body)
    expect(res.status).toBe(400)
    expect(res.body).toMatchObject({ code, ...extra })
    expect(String(res.body.error)).not.toBe('')
  })

  it('accepts exactly 2,500 events and a messageId of 99 characters', async () => {
    expect((await post(relay.url, '/v1/batch', { batch: Array.from({ length: 2500 }, (_, i) => ({ type: 'track', event: 'E', userId: `u${i}` })) })).status).toBe(200)
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
    for (let i = 0; i < 3; i++) expect((await post(relay.url, '/v1/track', track({ messageId: 'dup-1' }))).status).toBe(200)
    await post(relay.url, '/v1/batch', { batch: [{ type: 'track', ...track({ messageId: 'dup-1' }) }, { type: 'track', ...track({ messageId: 'dup-2' }) }] })
    await until(() => fake.accepted.length >= 2, 'two events')
    await new Promise((r) => setTimeout(r, 300))
    expect(fake.accepted).toHaveLength(2)
  })

  it('answers CORS preflights so browsers can send to it', async () => {
    const res = await fetch(`${relay.url}/v1/track`, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } })
    expect(res.status).toBe(204)
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
    expect(res.headers.get('access-control-allow-headers')).toContain('authorization')
  })
})

describe('stamping (acceptRequest)', () => {
  const config = parseConfig({ sources: [{ name: 'web', writeKey: 'wk', projectApiKey: 'pk' }] })
  const sources = new Map(config.sources.map((s) => [s.writeKey, s]))
  const now = Date.parse('2026-06-01T12:00:00.000Z')
  const accept = (route: 'track' | 'batch', body: Record<string, unknown>) => acceptRequest(route, { writeKey: 'wk', ...body }, undefined, sources, now, () => 'generated-id') as Accepted
  const stored = (a: Accepted, i = 0) => JSON.parse(a.events[i]!.body) as Record<string, unknown>

  it('stamps receivedAt, assigns a messageId when absent, and never stores the write key', () => {
    const a = accept('track', { event: 'E', userId: 'u1', timestamp: '2026-06-01T11:59:00.000Z' })
    expect(stored(a)).toMatchObject({ type: 'track', messageId: 'generated-id', receivedAt: '2026-06-01T12:00:00.000Z', timestamp: '2026-06-01T11:59:00.000Z' })
    expect(a.events[0]!.body).not.toContain('wk')
    expect(accept('track', { event: 'E', userId: 'u1', messageId: 'mine' }).events[0]!.messageId).toBe('mine')
  })

  it("corrects the client's clock skew as Segment does: timestamp = receivedAt − (sentAt − timestamp)", () => {
    // The client clock is 1 h fast: the event happened 5 s before it was sent.
    const a = accept('batch', { sentAt: '2026-06-01T13:00:05.000Z', batch: [{ type: 'track', event: 'E', userId: 'u1', timestamp: '2026-06-01T13:00:00.000Z' }] })
    expect(stored(a)).toMatchObject({ timestamp: '2026-06-01T11:59:55.000Z', originalTimestamp: '2026-06-01T13:00:00.000Z' })
  })

  it('stamps timestamp = receivedAt when the event has none (delivery may come later)', () => {
    expect(stored(accept('track', { event: 'E', userId: 'u1' }))).toMatchObject({ timestamp: '2026-06-01T12:00:00.000Z' })
  })

  it("applies a batch's top-level context and integrations to events that have none", () => {
    const a = accept('batch', { context: { app: 'x' }, integrations: { All: false }, batch: [{ type: 'track', event: 'E', userId: 'u1' }, { type: 'track', event: 'F', userId: 'u1', integrations: {} }] })
    expect(stored(a, 0)).toMatchObject({ context: { app: 'x' }, integrations: { All: false } })
    expect(stored(a, 1).integrations).toEqual({})
  })

  it('orders by user: userId, else anonymousId', () => {
    const a = accept('batch', { batch: [{ type: 'track', event: 'E', userId: 7, anonymousId: 'a' }, { type: 'track', event: 'E', anonymousId: 'anon' }] })
    expect(a.events.map((e) => e.userKey)).toEqual(['7', 'anon'])
  })

  it('reads the write key from HTTP Basic with or without the trailing colon', () => {
    expect(writeKeyFromBasic(`Basic ${Buffer.from('abc:').toString('base64')}`)).toBe('abc')
    expect(writeKeyFromBasic(`Basic ${Buffer.from('abc').toString('base64')}`)).toBe('abc')
    expect(writeKeyFromBasic('Bearer abc')).toBeUndefined()
    expect(writeKeyFromBasic(`Basic ${Buffer.from(':').toString('base64')}`)).toBeUndefined()
  })
})

describe('disk cap', () => {
  it('answers 503 with Retry-After once the queue passes its cap, and keeps what it already accepted', async () => {
    const stalled = await FakeOneFlowApi.start()
    stalled.inject({ kind: 'status', status: 503, times: 1_000_000 })
    const capped = await startRelay(stalled, { limits: { diskCapBytes: 1024 * 1024 } })
    try {
      let last = { status: 200, headers: new Headers() }
      for (let i = 0; i < 80 && last.status === 200; i++) {
        last = await post(capped.url, '/v1/batch', { batch: Array.from({ length: 15 }, (_, j) => ({ type: 'track', event: 'E', userId: `u${i}-${j}`, properties: { blob: 'z'.repeat(2000) } })) })
        if (last.status === 200) await new Promise((r) => setTimeout(r, 30))
      }
      expect(last.status).toBe(503)
      expect(last.headers.get('retry-after')).toBe('60')
      const ready = await fetch(`${capped.url}/health/ready`)
      expect(ready.status).toBe(503)
      expect((await capped.relay.queue.stats(Date.now())).pending + (await capped.relay.queue.stats(Date.now())).leased).toBeGreaterThan(0)
    } finally {
      await capped.stop()
      await stalled.close()
    }
  })
})
