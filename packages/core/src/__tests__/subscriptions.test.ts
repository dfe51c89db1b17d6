import { parseFql, validate } from '@segment/destination-subscriptions'
import { describe, expect, it } from 'vitest'
import { DESTINATION_NAMES, InvalidSubscriptionError, isEnabledByIntegrations } from '../index'
import { lintFql, suggestFql, validateSubscriptions } from '../subscriptions'

const trackA = { type: 'track', event: 'A', userId: 'u', anonymousId: 'z', properties: { plan: 'pro', count: 5 } }

describe('FQL checks', () => {
  it.each([
    'type = "track"',
    'type = "track" and event = "A"',
    'event = "A" or event = "B"',
    'type = "track" and (event = "A" or event = "B")',
    'properties.plan = "pro"',
    'traits.age > 18',
    'context.page.path != null',
    'userId = null',
    'contains(event, "Ord")',
    '!match(event, "*Test")',
    'properties.count = 5 and properties.flag = true',
    'name = "Home"'
  ])('accepts %s, which Segment parses without error', (fql) => {
    expect(lintFql(fql)).toEqual([])
    expect('error' in parseFql(fql)).toBe(false)
  })

  // Each of these parses in Segment without an error but does not mean what it says.
  it.each([
    ['type == "track"', trackA, true, '"=="'],
    ["type = 'track'", trackA, true, 'single quotes'],
    ['event = "B" OR event = "A"', trackA, true, 'must be lowercase'],
    ['event = "A" and anonymousId = "nope"', trackA, false, 'anonymousId'],
    ['type = "page" and event = "A" or event = "A"', trackA, false, 'without parentheses'],
    ['match(event, "XA")', trackA, false, 'needs "*"']
  ])('refuses %s (Segment would silently misread it)', (fql, event, intended, problem) => {
    const ast = parseFql(fql)
    expect('error' in ast).toBe(false)
    expect(validate(ast as Exclude<typeof ast, { error: Error }>, event)).not.toBe(intended)
    expect(
      lintFql(fql)
        .map((p) => p.message)
        .join(' ')
    ).toContain(problem)
  })

  it.each([
    ['', 'empty'],
    ['((type = "track"', 'never closed'],
    ['type = ', 'value is missing'],
    ['type = "track" and', 'ends with'],
    ['event in ["A"]', 'expected an operator']
  ])('refuses %s with a message', (fql, text) => {
    expect(
      lintFql(fql)
        .map((p) => p.message)
        .join(' ')
    ).toContain(text)
  })

  it('points at the column of the problem', () => {
    expect(lintFql('type = "track" and event == "A"')).toEqual([expect.objectContaining({ column: 26 })])
  })

  it('suggests the mechanical fix', () => {
    expect(suggestFql(`type == 'track' AND event = "A"`)).toBe('type = "track" and event = "A"')
  })
})

describe('validateSubscriptions', () => {
  const sub = (i: number) => ({ name: `M${i}`, subscribe: `event = "E${i}"`, partnerAction: 'trackEvent' })

  it('accepts 50 mappings and refuses 51', () => {
    expect(validateSubscriptions(Array.from({ length: 50 }, (_, i) => sub(i)))).toHaveLength(50)
    expect(() => validateSubscriptions(Array.from({ length: 51 }, (_, i) => sub(i)))).toThrowError(
      /51 mappings given.*at most 50/
    )
  })

  it('fills in the action defaults when a mapping is omitted, and drops disabled ones', () => {
    const [first, ...rest] = validateSubscriptions([
      { subscribe: 'type = "track"', partnerAction: 'trackEvent' },
      { ...sub(1), enabled: false }
    ])
    expect(rest).toEqual([])
    expect(first).toEqual({
      name: 'trackEvent',
      subscribe: 'type = "track"',
      partnerAction: 'trackEvent',
      mapping: {
        event_name: { '@path': '$.event' },
        userId: { '@path': '$.userId' },
        anonymousId: { '@path': '$.anonymousId' },
        properties: { '@path': '$.properties' }
      }
    })
  })

  it('lists every problem at once, each saying where', () => {
    let error: unknown
    try {
      validateSubscriptions([
        { name: 'a', subscribe: 'type == "track"', partnerAction: 'trackEvent' },
        { name: 'b', subscribe: 'type = "track"', partnerAction: 'trackEvent', mapping: { properties: {} } },
        'nope'
      ])
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(InvalidSubscriptionError)
    const problems = (error as InvalidSubscriptionError).problems
    expect(problems.map((p) => [p.index, p.part])).toEqual([
      [0, 'subscribe'],
      [1, 'mapping'],
      [2, 'shape']
    ])
    expect(problems[1]?.message).toContain('required field "event_name"')
    expect((error as Error).message).toMatch(/^3 problems in subscriptions/)
  })

  it('refuses something that is not a list', () => {
    expect(() => validateSubscriptions({})).toThrowError(/must be an array/)
  })
})

describe('integrations object', () => {
  const { plugin, web, cloud } = DESTINATION_NAMES
  it.each([
    [undefined, plugin, true],
    [{}, plugin, true],
    [{ All: false }, plugin, false],
    [{ All: false }, web, false],
    [{ '1Flow': false }, plugin, false],
    [{ '1Flow': false }, web, true],
    [{ '1Flow': false }, cloud, true],
    [{ '1Flow Web (Actions)': false }, web, false],
    [{ '1Flow Web (Actions)': false }, plugin, true],
    [{ '1Flow Web (Actions)': false }, cloud, true],
    [{ '1Flow Cloud (Actions)': false }, cloud, false],
    [{ '1Flow Cloud (Actions)': false }, web, true],
    [{ All: false, '1Flow': true }, plugin, true],
    [{ All: false, '1Flow': true }, web, false],
    [{ All: false, '1Flow Web (Actions)': { someSetting: 1 } }, web, true],
    [{ All: false, '1Flow Cloud (Actions)': true }, cloud, true],
    [{ All: false, '1Flow Cloud (Actions)': true }, plugin, false],
    [{ All: true, '1Flow': false }, plugin, false],
    [{ Intercom: false }, plugin, true]
  ])('%j for %s → %s', (integrations, name, enabled) => {
    expect(isEnabledByIntegrations(integrations, name)).toBe(enabled)
  })
})
