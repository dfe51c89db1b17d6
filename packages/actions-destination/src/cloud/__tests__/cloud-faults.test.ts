/**
 * How "1Flow Cloud (Actions)" answers each 1Flow status, in the framework's terms, with faults injected
 * into testkit's fake 1Flow API over real HTTP; plus normalised wire snapshots.
 */
import {
  createTestIntegration,
  Destination,
  IntegrationError,
  InvalidAuthenticationError,
  RetryableError
} from '@segment/actions-core'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { FakeOneFlowApi, normalizeWire, type FakeFault } from '@oneflow-seg/testkit'
import { destination } from '../index'

let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
})
afterAll(() => fake.close())
beforeEach(() => fake.reset())

const KEY = 'test-project-key'
const settings = () => ({ projectApiKey: KEY, apiBaseUrl: fake.url }) as never
const testDestination = createTestIntegration(destination)
const track = (n: number, extra: Record<string, unknown> = {}) => ({
  type: 'track',
  event: `Event ${n}`,
  userId: `user-${n}`,
  anonymousId: undefined,
  properties: { n },
  traits: undefined,
  timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(),
  integrations: undefined,
  ...extra
})
const sendTrack = (event = track(1)) =>
  testDestination.testAction('trackEvent', { event: event as never, settings: settings(), useDefaultMappings: true })
const sendBatch = (events: unknown[]) =>
  testDestination
    .testBatchAction('trackEvent', { events: events as never, settings: settings(), useDefaultMappings: true })
    .then(
      () =>
        (
          testDestination.results.at(-1) as unknown as {
            multistatus: Array<{ status: number; errortype?: string; errormessage?: string }>
          }
        ).multistatus
    )
const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e as Error & { status?: number; code?: string }
  )

describe('single events (perform)', () => {
  it.each([
    ['401', { kind: 'status', status: 401 }, InvalidAuthenticationError, 401, /Project API Key/],
    ['403', { kind: 'status', status: 403 }, InvalidAuthenticationError, 401, /Project API Key/],
    [
      '429 with Retry-After',
      { kind: 'status', status: 429, retryAfter: '7' },
      RetryableError,
      429,
      /429 \(rate limited\); Retry-After: 7/
    ],
    ['500', { kind: 'status', status: 500 }, RetryableError, 500, /1Flow answered 500/],
    ['502', { kind: 'status', status: 502 }, RetryableError, 502, /502/],
    ['503', { kind: 'status', status: 503 }, RetryableError, 503, /503/],
    ['a dropped connection', { kind: 'drop' }, RetryableError, 503, /connection failed/],
    [
      '400 with 1Flow message',
      { kind: 'status', status: 400, body: '{"error":"user_id is not valid"}' },
      IntegrationError,
      400,
      /1Flow refused the request \(400\): user_id is not valid/
    ],
    ['413', { kind: 'status', status: 413 }, IntegrationError, 413, /too large/]
  ] as const)('1Flow answers %s', async (_what, fault, type, status, message) => {
    fake.inject(fault as FakeFault)
    const error = await failure(sendTrack())
    expect(error).toBeInstanceOf(type)
    expect(error?.constructor).not.toBe(Error)
    expect(error).toMatchObject({ status })
    expect(error?.message).toMatch(message)
    expect(error?.message).not.toContain(KEY)
    expect(fake.accepted).toEqual([])
  })

  it('a redirect is never followed with the api_key: IntegrationError naming where it pointed, nothing sent there', async () => {
    const elsewhere = await FakeOneFlowApi.start()
    try {
      fake.inject({ kind: 'status', status: 307, location: `${elsewhere.url}/track` })
      const error = await failure(sendTrack())
      expect(error).toBeInstanceOf(IntegrationError)
      expect(error).toMatchObject({ code: 'REDIRECT_NOT_FOLLOWED', status: 307 })
      expect(error?.message).toContain(`a redirect to http://127.0.0.1:${elsewhere.port}`)
      expect(elsewhere.requests).toEqual([])
    } finally {
      await elsewhere.close()
    }
  })

  it('a timeout is retryable (408)', async () => {
    const slow = createTestIntegration({ ...destination, extendRequest: () => ({ timeout: 300 }) })
    fake.setLatency(1_000)
    const error = await failure(
      slow.testAction('trackEvent', { event: track(1) as never, settings: settings(), useDefaultMappings: true })
    )
    expect(error).toBeInstanceOf(RetryableError)
    expect(error).toMatchObject({ status: 408 })
    // 1Flow did get it, too late: wait for that here so the request belongs to this test.
    await fake.waitFor((accepted) => accepted.length === 1)
  })

  it('identify without a User ID is reported as skipped and never sent', async () => {
    await testDestination.testAction('identifyUser', {
      event: { type: 'identify', userId: undefined, traits: { a: 1 } } as never,
      settings: settings(),
      useDefaultMappings: true
    })
    expect(testDestination.results.at(-1)).toMatchObject({ data: { skipped: true, reason: 'missing-user-id' } })
    expect(fake.requests).toEqual([])
  })

  it('a payload missing event_name is rejected by payload validation, not by 1Flow', async () => {
    const error = await failure(sendTrack(track(1, { event: undefined })))
    expect(error?.message).toMatch(/missing the required field 'event_name'/)
    expect(fake.requests).toEqual([])
    const viaOnEvent = await failure(
      new Destination(destination).onEvent(
        track(1, { event: undefined }) as never,
        {
          ...(settings() as object),
          subscriptions: [
            {
              subscribe: 'type = "track"',
              partnerAction: 'trackEvent',
              mapping: { event_name: { '@path': '$.event' } }
            }
          ]
        } as never
      )
    )
    expect(viaOnEvent).toMatchObject({ status: 400 })
    expect(fake.requests).toEqual([])
  })

  it('refuses settings without a project API key before sending anything', async () => {
    const error = await failure(
      new Destination(destination).onEvent(
        track(1) as never,
        {
          apiBaseUrl: fake.url,
          subscriptions: [{ subscribe: 'type = "track"', partnerAction: 'trackEvent', mapping: {} }]
        } as never
      )
    )
    expect(error?.message).toMatch(/projectApiKey|Project API Key/)
    expect(fake.requests).toEqual([])
  })
})

describe('batches (performBatch)', () => {
  it('splits a batch 1Flow refuses with 413 and delivers every event', async () => {
    fake.inject({ kind: 'status', status: 413, path: '/batch' })
    const entries = await sendBatch(Array.from({ length: 6 }, (_, i) => track(i)))
    expect(entries.map((e) => e.status)).toEqual([200, 200, 200, 200, 200, 200])
    expect(fake.requests.map((r) => r.status)).toEqual([413, 200, 200])
    expect(fake.accepted.map((m) => m.body.event)).toEqual(Array.from({ length: 6 }, (_, i) => `Event ${i}`))
  })

  it("splits a batch 1Flow refuses with 400 until the refusal names one event: only that one fails, with 1Flow's reason", async () => {
    fake.inject({ kind: 'status', status: 400, bodyContains: 'Event 1"', body: '{"error":"bad event"}', times: 10 })
    const entries = await sendBatch(Array.from({ length: 4 }, (_, i) => track(i)))
    expect(entries.map((e) => [e.status, e.errortype])).toEqual([
      [200, undefined],
      [400, 'BAD_REQUEST'],
      [200, undefined],
      [200, undefined]
    ])
    expect(entries[1]?.errormessage).toMatch(/bad event/)
    expect(fake.accepted.map((m) => m.body.event)).toEqual(['Event 0', 'Event 2', 'Event 3'])
  })

  it('reports only an event over 32 KB as 413 and sends the others', async () => {
    const entries = await sendBatch([track(0), track(1, { properties: { blob: 'x'.repeat(33_000) } }), track(2)])
    expect(entries.map((e) => [e.status, e.errortype])).toEqual([
      [200, undefined],
      [413, 'PAYLOAD_TOO_LARGE'],
      [200, undefined]
    ])
    expect(fake.accepted.map((m) => m.body.event)).toEqual(['Event 0', 'Event 2'])
  })

  it('keeps each event with its own timestamp when the framework drops an invalid one', async () => {
    const entries = await sendBatch([track(0), track(1, { event: undefined }), track(2), track(3)])
    expect(entries.map((e) => e.status)).toEqual([200, 400, 200, 200])
    expect(fake.accepted.map((m) => [m.body.event, m.body.timestamp])).toEqual([
      ['Event 0', '2026-01-01T00:00:00.000Z'],
      ['Event 2', '2026-01-01T00:00:02.000Z'],
      ['Event 3', '2026-01-01T00:00:03.000Z']
    ])
  })

  it('packs large batches into requests of at most 480 KB, in order', async () => {
    const events = Array.from({ length: 40 }, (_, i) => track(i, { properties: { blob: 'y'.repeat(30_000) } }))
    const entries = await sendBatch(events)
    expect(entries.every((e) => e.status === 200)).toBe(true)
    const batches = fake.requests.filter((r) => r.path === '/batch')
    expect(batches.length).toBeGreaterThan(2)
    for (const b of batches) expect(b.bytes).toBeLessThanOrEqual(480 * 1024)
    expect(fake.accepted.map((m) => m.body.event)).toEqual(events.map((e) => e.event))
  })

  it.each([
    ['429', { kind: 'status', status: 429, retryAfter: '30' }, 429, 'RETRYABLE_ERROR', /Retry-After: 30/],
    ['500', { kind: 'status', status: 500 }, 500, 'RETRYABLE_ERROR', /500/],
    ['401', { kind: 'status', status: 401 }, 401, 'INVALID_AUTHENTICATION', /Project API Key/],
    ['404 (a wrong project key)', { kind: 'status', status: 404 }, 404, 'INVALID_AUTHENTICATION', /Project API Key/],
    ['a dropped connection', { kind: 'drop' }, 503, 'RETRYABLE_ERROR', /connection failed/]
  ] as const)('1Flow answers %s: every entry says so', async (_what, fault, status, errortype, message) => {
    fake.inject(fault as FakeFault)
    const entries = await sendBatch([track(0), track(1)])
    expect(entries.map((e) => [e.status, e.errortype])).toEqual([
      [status, errortype],
      [status, errortype]
    ])
    for (const e of entries) expect(e.errormessage).toMatch(message)
  })
})

describe('wire (normalised: keys sorted, api_key redacted)', () => {
  it('identify, track and batch requests', async () => {
    await testDestination.testAction('identifyUser', {
      event: {
        type: 'identify',
        userId: 'user-1',
        traits: { plan: 'pro', name: 'Ada' },
        timestamp: '2026-01-01T00:00:00.000Z'
      } as never,
      settings: settings(),
      useDefaultMappings: true
    })
    await sendTrack(track(1, { anonymousId: 'anon-1' }))
    await sendBatch([track(2), track(3)])
    const wire = fake.requests.map((r) =>
      normalizeWire({ method: r.method, path: r.path, headers: r.headers, body: r.body })
    )
    expect(JSON.stringify(wire)).not.toContain(KEY)
    expect(wire).toMatchSnapshot()
  })
})
