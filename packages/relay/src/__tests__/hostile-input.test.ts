/**
 * Requests written to hurt the relay, beside good ones: bodies it must not read (preflights, telemetry,
 * unauthenticated uploads, declared sizes over the limit), a small request that would store a huge queue, and
 * events that throw while they are checked or stamped. None of them costs more than its own answer, and the
 * good events around them are stored and delivered.
 */
import { connect } from 'node:net'
import { gzipSync } from 'node:zlib'
import { Analytics } from '@segment/analytics-node'
import fc from 'fast-check'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { KEY_PREFIX_BYTES, topLevelWriteKey } from '../request-body'
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

const basic = (key: string) => `Basic ${Buffer.from(`${key}:`).toString('base64')}`

/**
 * Sends a request's head and only `sent` of its body, then waits: resolves with the relay's answer once the
 * relay closes the connection — which it must do without the rest of the body ever arriving.
 */
function partialRequest(head: string, sent: Buffer | string): Promise<string> {
  const { port } = new URL(relay.url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1')
    let answer = ''
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`the relay waited for the rest of the body; answered so far: ${answer.slice(0, 200)}`))
    }, 10_000)
    socket.on('error', () => undefined)
    socket.on('data', (d) => (answer += d.toString('latin1')))
    socket.on('close', () => {
      clearTimeout(timer)
      resolve(answer)
    })
    socket.write(`${head}\r\n\r\n`)
    socket.write(sent)
  })
}

const queuedBytes = () => relay.relay.queue.liveBytes()

describe('bodies the relay never reads', () => {
  it('a CORS preflight declaring 1 GB (a gzip bomb) is answered 204 at once; its body is never read', async () => {
    const bomb = gzipSync(Buffer.alloc(20 * 1024 * 1024, ' ')).subarray(0, 4096)
    const answer = await partialRequest(
      'OPTIONS /v1/batch HTTP/1.1\r\nHost: relay\r\nOrigin: https://site.example\r\nAccess-Control-Request-Method: POST\r\nContent-Encoding: gzip\r\nContent-Length: 1000000000',
      bomb
    )
    expect(answer).toMatch(/^HTTP\/1\.1 204 /)
    expect(answer).toMatch(/access-control-allow-methods: POST/i)
    expect(answer).toMatch(/connection: close/i)
    expect((await fetch(`${relay.url}/health/live`)).status).toBe(200)
  })

  it("analytics.js's telemetry (/v1/m) is answered 204 without its body, whatever its size and without a key", async () => {
    const answer = await partialRequest(
      'POST /v1/m HTTP/1.1\r\nHost: relay\r\nContent-Type: text/plain\r\nContent-Length: 500000000',
      '{"series":['
    )
    expect(answer).toMatch(/^HTTP\/1\.1 204 /)
  })

  it('a declared size over the route limit is refused with 400 before the body', async () => {
    const answer = await partialRequest(
      `POST /v1/track HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nAuthorization: ${basic(WRITE_KEY)}\r\nContent-Length: 40000`,
      '{"userId":"u"'
    )
    expect(answer).toMatch(/^HTTP\/1\.1 400 /)
    expect(answer).toContain('"code":"request_too_large"')
  })

  it(`without Basic auth, a body whose first ${KEY_PREFIX_BYTES} bytes hold no write key is refused 401 after them`, async () => {
    const padding = 'x'.repeat(KEY_PREFIX_BYTES + 2000)
    const start = `{"batch":[{"type":"track","userId":"u","event":"E","properties":{"pad":"${padding}"}}`
    const answer = await partialRequest(
      `POST /v1/batch HTTP/1.1\r\nHost: relay\r\nContent-Type: text/plain\r\nContent-Length: 400000`,
      start
    )
    expect(answer).toMatch(/^HTTP\/1\.1 401 /)
    expect(answer).toContain('"code":"missing_write_key"')
  })

  it('without Basic auth, an unknown write key at the start of the body is refused 401 before the rest', async () => {
    const answer = await partialRequest(
      `POST /v1/batch HTTP/1.1\r\nHost: relay\r\nContent-Type: text/plain\r\nContent-Length: 400000`,
      `{"writeKey":"not-a-key","batch":[${'{"type":"track","userId":"u","event":"E"},'.repeat(300)}`
    )
    expect(answer).toMatch(/^HTTP\/1\.1 401 /)
    expect(answer).toContain('"code":"unknown_write_key"')
  })

  it('without Basic auth, a known write key in the body (first, or later in a small body) is taken', async () => {
    const send = (body: string) =>
      fetch(`${relay.url}/v1/batch`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body })
    expect(
      (await send(JSON.stringify({ writeKey: WRITE_KEY, batch: [{ type: 'track', userId: 'u', event: 'First' }] })))
        .status
    ).toBe(200)
    expect(
      (await send(JSON.stringify({ batch: [{ type: 'track', userId: 'u', event: 'Last' }], writeKey: WRITE_KEY })))
        .status
    ).toBe(200)
    await until(() => fake.accepted.length === 2, 'both events at 1Flow')
  })
})

describe('topLevelWriteKey', () => {
  it.each([
    ['{"writeKey":"k","batch":[]}', 'k'],
    ['  {"sentAt":"x","batch":[{"writeKey":"inner"}],"writeKey":"outer"}', 'outer'],
    ['{"a":{"writeKey":"nested"}}', undefined],
    ['{"a":"\\"writeKey\\":\\"fake\\"","writeKey":"real"}', 'real'],
    ['{"writeKey":"cut-off', undefined],
    ['{"writeKey":1}', undefined],
    ['["writeKey","k"]', undefined],
    ['{"batch":[1,2,{"x":[true,null]}],"n":-1.5e3,"writeKey":"k"}', 'k']
  ])('%s → %s', (text, key) => {
    expect(topLevelWriteKey(text)).toBe(key)
  })
})

describe('what a request may store', () => {
  it('a batch-level context copied into 2,500 tiny events is refused whole (400) and stores nothing', async () => {
    const context = { blob: 'c'.repeat(32_000) }
    const batch = Array.from({ length: 2500 }, (_, i) => ({ type: 'track', userId: `u${i}`, event: 'E' }))
    const body = gzipSync(JSON.stringify({ context, batch }))
    expect(body.length).toBeLessThan(10_000)
    const before = await queuedBytes()
    const res = await fetch(`${relay.url}/v1/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', authorization: basic(WRITE_KEY) },
      body
    })
    expect(res.status).toBe(400)
    const answer = (await res.json()) as { code: string; error: string }
    expect(answer.code).toBe('shared_context_too_large')
    expect(answer.error).toMatch(/copied into 2500 events/)
    expect(await queuedBytes()).toBeLessThan(before + 64 * 1024)
  })

  it('a small batch-level context still goes to every event that has none', async () => {
    const res = await post(relay.url, '/v1/batch', {
      context: { app: { name: 'shop' } },
      batch: [
        { type: 'track', userId: 'u1', event: 'A' },
        { type: 'track', userId: 'u2', event: 'B', context: { app: { name: 'own' } } }
      ]
    })
    expect(res.status).toBe(200)
    await until(() => fake.accepted.length === 2, 'both at 1Flow')
  })
})

/** A raw JSON body through the relay with the write key in Basic auth. */
const postRaw = (path: string, body: string) =>
  fetch(`${relay.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: basic(WRITE_KEY) },
    body
  }).then(async (r) => ({
    status: r.status,
    body: (await r.json()) as { rejected?: Array<{ index: number; code: string }> }
  }))

const nested = (n: number, inner = '1') => `${'{"a":'.repeat(n)}${inner}${'}'.repeat(n)}`

describe('an event that throws while it is checked or stamped is rejected alone', () => {
  it.each([
    ['a type nested 20,000 deep', `{"type":${'['.repeat(20_000)}${']'.repeat(20_000)},"userId":"u"}`, 'invalid_type'],
    [
      'its own context nested 20,000 deep',
      `{"type":"track","userId":"u","event":"E","context":${nested(20_000)}}`,
      'too_deep'
    ],
    [
      'a timestamp and sentAt whose skew correction leaves the dates JSON can hold',
      '{"type":"track","userId":"u","event":"E","timestamp":"+275760-09-13T00:00:00.000Z","sentAt":"1970-01-01T00:00:00.000Z"}',
      'invalid_timestamp'
    ]
  ])('%s: 200, that event rejected and dead-lettered, its neighbours delivered', async (_what, bad, code) => {
    const good = (n: number) => `{"type":"track","userId":"good","event":"Good ${n}"}`
    const res = await postRaw('/v1/batch', `{"batch":[${good(1)},${bad},${good(2)}]}`)
    expect(res.status).toBe(200)
    expect(res.body.rejected).toEqual([{ index: 1, code, error: expect.any(String) }])
    await until(() => fake.accepted.length === 2, 'the two good events at 1Flow')
    expect(fake.accepted.map((m) => m.body.event)).toEqual(['Good 1', 'Good 2'])
  })

  it("the depth rule covers the batch's context: events that would get one nested 100 deep are rejected, the others kept", async () => {
    const res = await postRaw(
      '/v1/batch',
      `{"context":${nested(100)},"batch":[{"type":"track","userId":"u","event":"Gets it"},{"type":"track","userId":"u","event":"Own","context":{"ok":true}}]}`
    )
    expect(res.status).toBe(200)
    expect(res.body.rejected).toEqual([{ index: 0, code: 'too_deep', error: expect.stringMatching(/batch's context/) }])
    await until(() => fake.accepted.length === 1, 'the event with its own context at 1Flow')
    expect(fake.accepted[0]?.body.event).toBe('Own')
  })

  it('@segment/analytics-node 3.1.0: three good tracks and one timestamped at the last date JSON can hold; the three reach 1Flow', async () => {
    const analytics = new Analytics({ writeKey: WRITE_KEY, host: relay.url, flushAt: 4, flushInterval: 100 })
    const failures: unknown[] = []
    analytics.on('error', (e) => failures.push(e))
    for (const n of [1, 2]) analytics.track({ userId: 'node-user', event: `Good ${n}` })
    analytics.track({ userId: 'node-user', event: 'Far future', timestamp: new Date(8.64e15) })
    analytics.track({ userId: 'node-user', event: 'Good 3' })
    await analytics.closeAndFlush()
    expect(failures).toEqual([])
    await until(() => fake.accepted.length === 3, 'the three good tracks at 1Flow')
    expect(fake.accepted.map((m) => m.body.event)).toEqual(['Good 1', 'Good 2', 'Good 3'])
  })
})

describe('property: generated hostile events inside good batches', () => {
  const scalar = fc.oneof(fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null))
  const deepText = fc.integer({ min: 65, max: 20_000 }).map((n) => `${'['.repeat(n)}${']'.repeat(n)}`)
  const time = fc.oneof(
    fc.constant('+275760-09-13T00:00:00.000Z'),
    fc.constant('-271821-04-20T00:00:00.000Z'),
    fc.constant('1970-01-01T00:00:00.000Z'),
    fc.string(),
    fc.date({ noInvalidDate: true }).map((d) => d.toISOString())
  )
  /** One hostile item as JSON text: each has something that must get it rejected (never the request). */
  const hostile = fc.oneof(
    deepText.map((d) => `{"type":${d},"userId":"h"}`),
    deepText.map((d) => `{"type":"track","userId":"h","event":"H","context":${d}}`),
    deepText.map((d) => `{"type":"identify","userId":"h","traits":{"x":${d}}}`),
    fc
      .tuple(time, time)
      .map(
        ([timestamp]) =>
          `{"type":"track","userId":"h","event":"H","timestamp":${JSON.stringify(timestamp)},"sentAt":"+275760-09-13T00:00:00.000Z"}`
      ),
    scalar.map((v) => JSON.stringify(v)),
    fc.constant('{"type":"track","userId":"h","event":"H","messageId":""}'),
    fc.constant('{"type":"track","anonymousId":"  ","event":"H"}'),
    fc.constant('{"__proto__":{"polluted":true},"type":"page"}'),
    fc
      .string({ minLength: 33_000, maxLength: 34_000 })
      .map((s) => `{"type":"track","userId":"h","event":"H","properties":{"s":${JSON.stringify(s)}}}`)
  )
  let batchNo = 0

  it('every good event is stored and delivered; every hostile one is rejected on its own', async () => {
    let expected = 0
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(hostile, fc.constant('GOOD')), { minLength: 1, maxLength: 12 }),
        async (items) => {
          const n = ++batchNo
          let good = 0
          const texts = items.map((item) =>
            item === 'GOOD' ? `{"type":"track","userId":"p${n}","event":"Good ${n}.${++good}"}` : item
          )
          const res = await postRaw('/v1/batch', `{"batch":[${texts.join(',')}]}`)
          expect(res.status).toBe(200)
          const rejected = new Set((res.body.rejected ?? []).map((r) => r.index))
          for (const [i, item] of items.entries()) if (item === 'GOOD') expect(rejected.has(i)).toBe(false)
          // (A hostile item whose skew correction still lands on a date is accepted: it is not counted here.)
          expected += good
        }
      ),
      { numRuns: 60 }
    )
    const goodAt1Flow = () => fake.accepted.filter((m) => /^p\d+$/.test(String(m.body.user_id))).length
    await until(() => goodAt1Flow() === expected, `${expected} good events at 1Flow`, 30_000)
    for (let n = 1; n <= batchNo; n++) {
      const events = fake.accepted.filter((m) => m.body.user_id === `p${n}`).map((m) => m.body.event)
      expect(events).toEqual(events.slice().sort((a, b) => String(a).localeCompare(String(b), 'en', { numeric: true })))
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  }, 120_000)
})

describe('a UTF-8 byte order mark', () => {
  it('is skipped, plain and gzipped', async () => {
    const json = Buffer.from(JSON.stringify({ userId: 'u', event: 'With BOM' }))
    const withBom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), json])
    for (const [body, encoding] of [
      [withBom, undefined],
      [gzipSync(withBom), 'gzip']
    ] as const) {
      const res = await fetch(`${relay.url}/v1/track`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: basic(WRITE_KEY),
          ...(encoding && { 'content-encoding': encoding })
        },
        body
      })
      expect(res.status).toBe(200)
    }
    await until(() => fake.accepted.length === 2, 'both at 1Flow')
  })
})
