import { runInNewContext } from 'node:vm'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { FakeOneFlowApi, normalizeWire, recordingSdkScript, type SdkRecord } from '../index'

let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
})
afterAll(() => fake.close())
beforeEach(() => fake.reset())

const post = (
  path: string,
  body: unknown,
  headers: Record<string, string> = { 'content-type': 'application/json', api_key: 'test-project-key' }
) =>
  fetch(`${fake.url}${path}`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) })

describe('fake 1Flow API', () => {
  it.each([
    ['no api_key', '/track', { event: 'E' }, { 'content-type': 'application/json' }, 401],
    ['unknown api_key', '/track', { event: 'E' }, { 'content-type': 'application/json', api_key: 'other' }, 401],
    ['unknown field', '/track', { event: 'E', messageId: 'm' }, undefined, 400],
    ['null field', '/identify', { user_id: 'u', traits: null }, undefined, 400],
    ['missing user_id', '/identify', { traits: {} }, undefined, 400],
    ['bad timestamp', '/track', { event: 'E', timestamp: 'yesterday' }, undefined, 400],
    ['invalid JSON', '/track', '{"event":', undefined, 400],
    ['over 32 KB', '/track', { event: 'E', properties: { x: 'y'.repeat(33_000) } }, undefined, 413],
    ['empty batch', '/batch', { batch: [] }, undefined, 400],
    ['batch item without type', '/batch', { batch: [{ event: 'E' }] }, undefined, 400],
    [
      'batch over 500 KB',
      '/batch',
      {
        batch: Array.from({ length: 20 }, () => ({ type: 'track', event: 'E', properties: { x: 'y'.repeat(30_000) } }))
      },
      undefined,
      413
    ]
  ])('refuses %s', async (_what, path, body, headers, status) => {
    const res = await post(path, body, headers)
    expect(res.status).toBe(status)
    expect(((await res.json()) as { error: string }).error).toBeTruthy()
    expect(fake.accepted).toEqual([])
    expect(fake.requests).toHaveLength(1)
  })

  it('injects a status with Retry-After the given number of times, then behaves normally', async () => {
    fake.inject({ kind: 'status', status: 429, retryAfter: '3', times: 2, path: '/track' })
    const statuses: Array<[number, string | null]> = []
    for (let i = 0; i < 3; i++) {
      const res = await post('/track', { event: 'E' })
      statuses.push([res.status, res.headers.get('retry-after')])
    }
    expect(statuses).toEqual([
      [429, '3'],
      [429, '3'],
      [200, null]
    ])
    expect(fake.accepted).toHaveLength(1)
  })

  it('drops connections and adds latency on request', async () => {
    fake.inject({ kind: 'drop' })
    await expect(post('/track', { event: 'E' })).rejects.toThrow()
    fake.inject({ kind: 'latency', ms: 150 })
    const started = Date.now()
    expect((await post('/track', { event: 'E' })).status).toBe(200)
    expect(Date.now() - started).toBeGreaterThanOrEqual(140)
    expect(fake.requests.map((r) => r.status)).toEqual(['dropped', 200])
  })

  it('never records a request that arrived before a reset, nor gives it a fault injected after', async () => {
    fake.setLatency(300)
    const late = post('/track', { event: 'Before reset' })
    await new Promise((r) => setTimeout(r, 100))
    fake.reset()
    fake.inject({ kind: 'status', status: 500, path: '/track' })
    expect((await late).status).toBe(200)
    expect(fake.requests).toEqual([])
    expect(fake.accepted).toEqual([])
    expect((await post('/track', { event: 'After reset' })).status).toBe(500)
    expect(fake.requests.map((r) => r.status)).toEqual([500])
  })

  it('is controllable over HTTP from other processes', async () => {
    const origin = fake.url.replace(/\/v1$/, '')
    await fetch(`${origin}/__fake/faults`, { method: 'POST', body: JSON.stringify({ kind: 'status', status: 503 }) })
    expect((await post('/track', { event: 'E' })).status).toBe(503)
    expect((await post('/track', { event: 'F' })).status).toBe(200)
    const accepted = (await (await fetch(`${origin}/__fake/accepted`)).json()) as Array<{ body: { event: string } }>
    expect(accepted.map((m) => m.body.event)).toEqual(['F'])
    await fetch(`${origin}/__fake/reset`, { method: 'POST' })
    expect(fake.accepted).toEqual([])
  })

  it('measures the request rate it received', async () => {
    for (let i = 0; i < 5; i++) await post('/track', { event: 'E' })
    expect(fake.maxRequestsInWindow(60_000)).toBe(5)
    expect(fake.maxRequestsInWindow(0)).toBe(0)
  })
})

describe('recording SDK script', () => {
  function load(shape: 'methods' | 'function', times = 1) {
    const script = { getAttribute: (name: string) => (name === 'data-api-key' ? 'key-1' : null) }
    const window: Record<string, unknown> = {}
    const context = { window, document: { currentScript: script, querySelector: () => script } }
    for (let i = 0; i < times; i++) runInNewContext(recordingSdkScript({ shape }), context)
    return window as { _1flow: unknown; __oneflowRecorder: SdkRecord }
  }

  it('records method-form calls and the data-api-key', () => {
    const w = load('methods')
    const sdk = w._1flow as { logUser: (...a: unknown[]) => void; logEvent: (...a: unknown[]) => void }
    sdk.logUser('u1', { plan: 'pro' })
    sdk.logEvent('E', { a: 1 })
    expect(JSON.parse(JSON.stringify(w.__oneflowRecorder))).toEqual({
      calls: [
        ['logUser', 'u1', { plan: 'pro' }],
        ['logEvent', 'E', { a: 1 }]
      ],
      raw: [
        ['logUser', 'u1', { plan: 'pro' }],
        ['logEvent', 'E', { a: 1 }]
      ],
      loads: 1,
      apiKey: 'key-1',
      shape: 'methods'
    })
  })

  it('translates function-form calls (Segment reference shape) to method form', () => {
    const w = load('function')
    const sdk = w._1flow as (...a: unknown[]) => void
    sdk('identify', 'u1', { plan: 'pro' })
    sdk('track', 'E', { userId: 'u1', anonymousId: 'a', properties: { x: 1 } })
    expect(JSON.parse(JSON.stringify(w.__oneflowRecorder.calls))).toEqual([
      ['logUser', 'u1', { plan: 'pro' }],
      ['logEvent', 'E', { x: 1 }]
    ])
  })

  it('counts a second execution without replacing the loaded SDK', () => {
    const w = load('methods', 2)
    expect(w.__oneflowRecorder.loads).toBe(2)
    expect(typeof (w._1flow as { logUser: unknown }).logUser).toBe('function')
  })
})

describe('wire normalisation', () => {
  it('sorts keys, keeps content-type, redacts api_key and drops other headers', () => {
    expect(
      normalizeWire({
        method: 'POST',
        path: '/track',
        headers: { api_key: 'secret', 'Content-Type': 'application/json', 'user-agent': 'x' },
        body: { z: 1, a: { writeKey: 'w', b: 2 } }
      })
    ).toEqual({
      body: { a: { b: 2, writeKey: '[redacted]' }, z: 1 },
      headers: { api_key: '[redacted]', 'content-type': 'application/json' },
      method: 'POST',
      path: '/track'
    })
    expect(JSON.stringify(normalizeWire({ method: 'POST', path: '/', headers: { api_key: 'secret' } }))).not.toContain(
      'secret'
    )
  })
})
