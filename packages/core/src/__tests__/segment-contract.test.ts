/** Segment's side of the wire, defined once: paths, limits, event rules and the batch body. */
import { describe, expect, it } from 'vitest'
import {
  checkSegmentEvent,
  exceedsDepth,
  isValidMessageId,
  SEGMENT_EVENT_TYPES,
  SEGMENT_LIMITS,
  SEGMENT_PATHS,
  segmentBatchBody,
  surveyResponseToTrack
} from '../index'

describe('Segment paths', () => {
  it('maps every path clients use to its meaning: long names, analytics.js short forms, import as batch', () => {
    expect(SEGMENT_PATHS).toEqual({
      identify: 'identify',
      i: 'identify',
      track: 'track',
      t: 'track',
      page: 'page',
      p: 'page',
      screen: 'screen',
      s: 'screen',
      group: 'group',
      g: 'group',
      alias: 'alias',
      a: 'alias',
      batch: 'batch',
      b: 'batch',
      import: 'batch'
    })
    for (const type of SEGMENT_EVENT_TYPES) expect(SEGMENT_PATHS[type]).toBe(type)
  })

  it("holds Segment's limits", () => {
    expect(SEGMENT_LIMITS).toEqual({
      eventBytes: 32768,
      batchRequestBytes: 512000,
      batchEvents: 2500,
      batchPackBytes: 491520,
      messageIdChars: 100
    })
  })
})

describe('checkSegmentEvent', () => {
  it.each([
    ['a valid track', { event: 'E', userId: 'u' }, 'track', undefined],
    ['a valid identify by anonymousId', { anonymousId: 'a' }, 'identify', undefined],
    ['a numeric userId', { userId: 42 }, 'identify', undefined],
    ['not an object', [1], 'track', 'invalid_event'],
    ['an unknown type', { userId: 'u' }, 'purchase', 'invalid_type'],
    ['no type', { userId: 'u' }, undefined, 'invalid_type'],
    ['a blank userId and no anonymousId', { userId: '  ', event: 'E' }, 'track', 'missing_identity'],
    ['a track without event', { userId: 'u' }, 'track', 'missing_event_name'],
    ['a messageId of 100 characters', { userId: 'u', messageId: 'm'.repeat(100) }, 'identify', 'invalid_message_id'],
    ['a messageId with NUL', { userId: 'u', messageId: 'a\u0000b' }, 'identify', 'invalid_message_id'],
    [
      'nesting past 64 levels',
      { userId: 'u', traits: JSON.parse(`${'{"a":'.repeat(64)}1${'}'.repeat(64)}`) },
      'identify',
      'too_deep'
    ]
  ])('%s', (_what, raw, type, code) => {
    expect(checkSegmentEvent(raw, type)?.code).toBe(code)
  })

  it('names a type that is not a string by its kind, without writing it out (one nested 20,000 deep does not overflow the stack)', () => {
    const deep = JSON.parse(`${'['.repeat(20_000)}${']'.repeat(20_000)}`) as unknown
    expect(checkSegmentEvent({ userId: 'u' }, deep)).toEqual({
      code: 'invalid_type',
      message: 'has type an array; expected one of identify, track, page, screen, group, alias'
    })
    expect(checkSegmentEvent({ userId: 'u' }, null)?.message).toMatch(/^has type null;/)
  })

  it('says what is wrong in words that complete "event 3 …"', () => {
    expect(checkSegmentEvent({ event: 'E' }, 'track')?.message).toBe(
      'has neither userId nor anonymousId; send at least one'
    )
    expect(checkSegmentEvent({ userId: 'u' }, 'purchase')?.message).toBe(
      'has type "purchase"; expected one of identify, track, page, screen, group, alias'
    )
  })

  it('accepts messageIds of 1 to 99 characters', () => {
    expect([
      isValidMessageId('m'),
      isValidMessageId('m'.repeat(99)),
      isValidMessageId(''),
      isValidMessageId(7)
    ]).toEqual([true, true, false, false])
  })
})

describe('exceedsDepth', () => {
  it('measures depth exactly', () => {
    const nested = (n: number): unknown => (n === 0 ? 1 : { a: nested(n - 1) })
    expect(exceedsDepth(nested(3), 3)).toBe(false)
    expect(exceedsDepth(nested(4), 3)).toBe(true)
    expect(exceedsDepth([[[]]], 2)).toBe(true)
    expect(exceedsDepth('text', 0)).toBe(false)
  })

  it('measures a document nested 100,000 levels deep without running out of stack', () => {
    const deep = JSON.parse(`${'['.repeat(100_000)}${']'.repeat(100_000)}`)
    expect(exceedsDepth(deep)).toBe(true)
  })
})

it('segmentBatchBody wraps serialized events with sentAt', () => {
  expect(JSON.parse(segmentBatchBody(['{"type":"track"}', '{"type":"identify"}'], '2026-01-01T00:00:00.000Z'))).toEqual(
    {
      batch: [{ type: 'track' }, { type: 'identify' }],
      sentAt: '2026-01-01T00:00:00.000Z'
    }
  )
})

describe('survey responses are cleaned as ingest cleans client events', () => {
  it('drops NUL from ids and keeps the messageId under 100 characters', () => {
    const { event } = surveyResponseToTrack(
      { alert_id: `a\u0000${'x'.repeat(200)}`, user: { user_id: 'user-\u00001' } },
      { receivedAt: 0, fallbackId: 'f' }
    )
    expect(event.userId).toBe('user-1')
    expect(event.messageId).toBe(`1flow-alert-a${'x'.repeat(86)}`)
    expect(isValidMessageId(event.messageId)).toBe(true)
  })
})
