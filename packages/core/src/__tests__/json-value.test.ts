import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  buildRequest,
  InvalidPayloadError,
  MAX_DEPTH,
  toId,
  toIdentifyCommand,
  toJsonObject,
  toJsonValue,
  toTrackCommand
} from '../index'

describe('toJsonValue', () => {
  it('turns Dates into ISO strings at any depth and drops undefined, functions and symbols', () => {
    const input = {
      at: new Date('2024-02-29T12:00:00Z'),
      list: [new Date(0), undefined, () => 1],
      nested: { gone: undefined, sym: Symbol('x'), keep: 1 }
    }
    expect(toJsonValue(input, 'traits')).toEqual({
      at: '2024-02-29T12:00:00.000Z',
      list: ['1970-01-01T00:00:00.000Z', null, null],
      nested: { keep: 1 }
    })
  })

  it('matches JSON.stringify for JSON-safe input (500 generated values)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const withoutProtoKeys = JSON.parse(JSON.stringify(v), (k, x) =>
          ['__proto__', 'constructor', 'prototype'].includes(k) ? undefined : x
        )
        // Compared as JSON: what is sent is the serialised form (-0 and 0 both serialise to 0).
        expect(JSON.stringify(toJsonValue(v, 'x'))).toBe(JSON.stringify(withoutProtoKeys))
      }),
      { numRuns: 500 }
    )
  })

  it('never lets __proto__, constructor or prototype through, and never pollutes Object.prototype', () => {
    const hostile = JSON.parse(
      '{"__proto__":{"polluted":1},"a":{"constructor":{"prototype":{"polluted":1}}},"prototype":2,"ok":true}'
    )
    const out = toJsonObject(hostile, 'traits')
    expect(out).toEqual({ a: {}, ok: true })
    expect(Object.keys(out)).toEqual(['a', 'ok'])
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  it('converts non-finite numbers to null and bigints to strings, as JSON would (or could not)', () => {
    expect(toJsonValue({ a: NaN, b: Infinity, c: 10n }, 'p')).toEqual({ a: null, b: null, c: '10' })
  })

  it('refuses circular references with an error naming the field', () => {
    const a: Record<string, unknown> = { name: 'a' }
    a.self = { back: a }
    expect(() => toJsonObject(a, 'traits')).toThrowError(InvalidPayloadError)
    expect(() => toJsonObject(a, 'traits')).toThrowError(/"traits" contains a circular reference/)
  })

  it('accepts the same object twice when it is not an ancestor (shared, not circular)', () => {
    const shared = { x: 1 }
    expect(toJsonObject({ a: shared, b: shared }, 'p')).toEqual({ a: { x: 1 }, b: { x: 1 } })
  })

  it(`refuses nesting deeper than ${MAX_DEPTH} levels instead of overflowing the stack`, () => {
    let deep: Record<string, unknown> = {}
    for (let i = 0; i < 10_000; i++) deep = { d: deep }
    const error = (() => {
      try {
        toJsonObject(deep, 'properties')
      } catch (e) {
        return e
      }
    })()
    expect(error).toBeInstanceOf(InvalidPayloadError)
    expect(error).toMatchObject({ field: 'properties', reason: 'too-deep' })
  })

  it('never mutates its input', () => {
    const input = { d: new Date(0), n: { u: undefined, ['__proto__']: 1 }, arr: [1, { x: undefined }] }
    const frozen = structuredClone(input)
    toJsonObject(input, 'p')
    expect(input).toEqual(frozen)
    expect('u' in input.n).toBe(true)
  })
})

describe('toId', () => {
  it('keeps strings, stringifies finite numbers, rejects the rest', () => {
    expect(toId('u-1')).toBe('u-1')
    expect(toId(' u ')).toBe(' u ')
    expect(toId(42)).toBe('42')
    expect(toId(0)).toBe('0')
    for (const bad of ['', '   ', null, undefined, NaN, Infinity, true, {}, []]) expect(toId(bad)).toBeUndefined()
  })
})

describe('command builders', () => {
  it('identify: skips without a usable User ID, for every unusable value', () => {
    for (const userId of [undefined, null, '', '  \t']) {
      expect(toIdentifyCommand({ userId, traits: { a: 1 } })).toMatchObject({ kind: 'skip', reason: 'missing-user-id' })
    }
  })

  it('identify: refuses traits that are not an object, naming the field', () => {
    expect(() => toIdentifyCommand({ userId: 'u', traits: 'x' })).toThrowError(
      expect.objectContaining({ field: 'traits', code: 'INVALID_PAYLOAD' })
    )
  })

  it('track: refuses a missing or blank event name with an error naming event_name', () => {
    for (const event_name of [undefined, null, '', '   ']) {
      expect(() => toTrackCommand({ event_name, properties: {} })).toThrowError(
        expect.objectContaining({ field: 'event_name', name: 'InvalidPayloadError' })
      )
    }
  })

  it('track: the HTTP body carries the timestamp as ISO-8601 and drops an unparseable one', () => {
    const target = { apiBaseUrl: 'https://api.1flow.app/v1', projectApiKey: 'k' }
    const body = (timestamp: unknown) =>
      JSON.parse(buildRequest(toTrackCommand({ event_name: 'E' }, { timestamp }), target).body)
    expect(body('2024-01-01T00:00:00+02:00')).toMatchObject({ timestamp: '2023-12-31T22:00:00.000Z' })
    expect(body('2024-01-01T00:00:00.000Z')).toMatchObject({ timestamp: '2024-01-01T00:00:00.000Z' })
    expect(body(new Date(5))).toMatchObject({ timestamp: '1970-01-01T00:00:00.005Z' })
    expect(body('yesterday')).not.toHaveProperty('timestamp')
    expect(toTrackCommand({ event_name: 'E' }, { timestamp: 42 })).not.toHaveProperty('timestamp')
  })

  it('track: coerces a numeric event name to a string, as Segment does for string fields', () => {
    expect(toTrackCommand({ event_name: 7 })).toMatchObject({ event: '7', properties: {} })
  })
})
