import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  buildRequest,
  classifyResponse,
  fullJitterDelay,
  ONEFLOW_LIMITS,
  packBatches,
  parseRetryAfter,
  PayloadTooLargeError,
  utf8ByteLength,
  type Command
} from '../index'

const target = { apiBaseUrl: 'https://api.1flow.app/v1/', projectApiKey: 'k-123' }
const track = (i: number, size = 10): Command => ({
  kind: 'track',
  event: `E${i}`,
  properties: { pad: 'x'.repeat(size) },
  userId: `u${i}`
})

describe('1Flow HTTP contract', () => {
  it('builds POST /identify with exactly user_id, traits and timestamp, and the api_key header', () => {
    const req = buildRequest(
      { kind: 'identify', userId: 'u1', traits: { plan: 'pro' }, timestamp: '2024-01-01T00:00:00.000Z' },
      target
    )
    expect(req).toMatchObject({ method: 'POST', path: '/identify', url: 'https://api.1flow.app/v1/identify' })
    expect(req.headers).toEqual({ 'content-type': 'application/json', api_key: 'k-123' })
    expect(JSON.parse(req.body)).toEqual({
      user_id: 'u1',
      traits: { plan: 'pro' },
      timestamp: '2024-01-01T00:00:00.000Z'
    })
    expect(req.bytes).toBe(Buffer.byteLength(req.body))
  })

  it('leaves fields without a value absent (never null), including empty properties', () => {
    const req = buildRequest({ kind: 'track', event: 'E', properties: {} }, target)
    expect(JSON.parse(req.body)).toEqual({ event: 'E' })
    expect(req.body).not.toContain('null')
  })

  it('refuses a single request over 32 KB with PayloadTooLargeError', () => {
    const error = (() => {
      try {
        buildRequest(track(1, 33_000), target)
      } catch (e) {
        return e
      }
    })()
    expect(error).toBeInstanceOf(PayloadTooLargeError)
    expect(error).toMatchObject({ limit: 32768, code: 'PAYLOAD_TOO_LARGE' })
  })

  it('packs batches in order, each body at most 480 KB, and reports items over 32 KB', () => {
    const cmds = Array.from({ length: 400 }, (_, i) => track(i, i === 7 ? 40_000 : 3_000))
    const { batches, tooLarge } = packBatches(cmds, target)
    expect(tooLarge).toEqual([7])
    expect(batches.length).toBeGreaterThan(1)
    for (const b of batches) {
      expect(b.request.bytes).toBeLessThanOrEqual(ONEFLOW_LIMITS.batchPackBytes)
      expect(b.request.bytes).toBe(Buffer.byteLength(b.request.body))
      expect(b.request.path).toBe('/batch')
      const body = JSON.parse(b.request.body)
      expect(body.batch.map((item: { event: string }) => item.event)).toEqual(b.indices.map((i) => `E${i}`))
      expect(body.batch[0]).toHaveProperty('type', 'track')
    }
    expect(batches.flatMap((b) => b.indices)).toEqual(cmds.map((_, i) => i).filter((i) => i !== 7))
  })

  it('packs arbitrary unicode exactly to the byte limit (property, 200 runs)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: 'grapheme', maxLength: 200 }), { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 600, max: 4000 }),
        (names, max) => {
          const cmds: Command[] = names.map((n) => ({ kind: 'track', event: n || 'e', properties: { n } }))
          const { batches, tooLarge } = packBatches(cmds, target, max)
          for (const b of batches) expect(Buffer.byteLength(b.request.body)).toBeLessThanOrEqual(max)
          expect([...batches.flatMap((b) => b.indices), ...tooLarge].sort((a, b) => a - b)).toEqual(
            cmds.map((_, i) => i)
          )
        }
      ),
      { numRuns: 200 }
    )
  })

  it('counts UTF-8 bytes exactly like Buffer.byteLength for well-formed strings', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        expect(utf8ByteLength(JSON.stringify(s))).toBe(Buffer.byteLength(JSON.stringify(s)))
      }),
      { numRuns: 1000 }
    )
  })
})

describe('response classification', () => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  it.each([
    [200, 'deliver'],
    [202, 'deliver'],
    [400, 'dead-letter'],
    [422, 'dead-letter'],
    [401, 'pause'],
    [403, 'pause'],
    [301, 'pause'],
    [307, 'pause'],
    [308, 'pause'],
    [413, 'split'],
    [429, 'retry'],
    [408, 'retry'],
    [500, 'retry'],
    [502, 'retry'],
    [503, 'retry'],
    [501, 'dead-letter'],
    [404, 'pause'],
    [undefined, 'retry']
  ])('status %s → %s', (status, action) => {
    expect(classifyResponse({ status }, now).action).toBe(action)
  })

  it('a redirect pauses sending with a reason naming where it points (origin only), never a delivery', () => {
    expect(classifyResponse({ status: 307, location: 'https://elsewhere.example/v1/batch?key=x' }, now)).toEqual({
      action: 'pause',
      cause: 'redirect',
      reason:
        '1Flow answered 307 (a redirect to https://elsewhere.example); redirects are not followed with the project API key: check the API base URL'
    })
    expect(classifyResponse({ status: 401 }, now)).toMatchObject({ action: 'pause', cause: 'auth' })
  })

  it('a 404 pauses like a refused key, with a reason that names the project key', () => {
    expect(classifyResponse({ status: 404 }, now)).toEqual({
      action: 'pause',
      cause: 'auth',
      reason:
        '1Flow answered 404: nothing found for the project API key; check that it is the right one (a wrong key answers 404) and that the API base URL is right'
    })
  })

  it("a redirect's user info (user:pass@) never reaches the reason", () => {
    const { reason } = classifyResponse(
      { status: 302, location: 'HTTPS://admin:s3cret@evil.example:8443/x?token=y' },
      now
    ) as { reason: string }
    expect(reason).toContain('a redirect to https://evil.example:8443)')
    expect(reason).not.toMatch(/admin|s3cret|token/)
  })

  it('429 asks the sender to slow down and keeps Retry-After', () => {
    expect(classifyResponse({ status: 429, retryAfter: '7' }, now)).toMatchObject({
      action: 'retry',
      afterMs: 7000,
      throttled: true,
      backoffBaseMs: 1000
    })
    expect(classifyResponse({ status: 503, retryAfter: 'Thu, 01 Jan 2026 00:00:30 GMT' }, now)).toMatchObject({
      action: 'retry',
      afterMs: 30_000,
      throttled: false
    })
  })

  it('parses Retry-After as seconds or an HTTP date, clamped to 0…300 s', () => {
    expect(parseRetryAfter('120', now)).toBe(120_000)
    expect(parseRetryAfter('1.5', now)).toBe(1500)
    expect(parseRetryAfter('100000', now)).toBe(300_000)
    expect(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now)).toBe(0)
    expect(parseRetryAfter('soon', now)).toBeUndefined()
    expect(parseRetryAfter(null, now)).toBeUndefined()
  })

  it('backs off with jitter between 0.5 s and min(60 s, 0.5 s·2^attempt)', () => {
    expect(fullJitterDelay(0, () => 0.99)).toBe(500)
    expect(fullJitterDelay(3, () => 0)).toBe(500)
    expect(fullJitterDelay(3, () => 0.999999)).toBe(3999)
    expect(fullJitterDelay(30, () => 0.999999)).toBeLessThan(60_000)
    expect(fullJitterDelay(30, () => 0.5)).toBe(30_250)
  })
})
