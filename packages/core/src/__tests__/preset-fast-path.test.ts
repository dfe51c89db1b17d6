import { transform } from '@segment/actions-core/mapping-kit'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  actionKeys,
  actions,
  defaultMapping,
  mapWithPresets,
  presetOutcome,
  presets,
  resolveDefaultPayload,
  toCommand,
  type SegmentEvent
} from '../index'
import { compileSubscriptions, mapWithSubscriptions } from '../mapping'

// Values of the kinds a Segment event carries, plus the awkward ones (null, '', numbers where strings belong, Dates).
const scalar = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(''),
  fc.date({ noInvalidDate: true })
)
const value = fc.oneof(
  scalar,
  fc.array(scalar, { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 6 }), scalar, { maxKeys: 4 })
)
const pageProps = fc.record(
  { path: value, url: value, title: value, referrer: value, search: value, other: value },
  { requiredKeys: [] }
)

const event: fc.Arbitrary<SegmentEvent> = fc.record(
  {
    type: fc.constantFrom('track', 'identify', 'page', 'group', 'alias', 'screen', 'Track', ''),
    event: fc.oneof(
      fc.string(),
      fc.constant(''),
      fc.constant(' '),
      fc.constant(null),
      fc.integer(),
      fc.constantFrom(NaN, Infinity, true),
      value
    ),
    name: fc.oneof(fc.string(), fc.constant(null)),
    userId: fc.oneof(
      fc.string(),
      fc.constant(''),
      fc.constant('  '),
      fc.constant(null),
      fc.integer(),
      fc.constantFrom(NaN, -Infinity, false),
      value
    ),
    anonymousId: fc.oneof(fc.uuid(), fc.constant(null), fc.constant(''), value),
    integrations: fc.dictionary(
      fc.constantFrom('All', '1Flow', '1Flow Web (Actions)', 'Intercom'),
      fc.oneof(fc.boolean(), fc.constant({ a: 1 })),
      {
        maxKeys: 3
      }
    ),
    traits: fc.oneof(value, fc.dictionary(fc.string({ maxLength: 8 }), value, { maxKeys: 6 })),
    properties: fc.oneof(pageProps, value),
    timestamp: fc.oneof(
      fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
      fc.constant('not a date')
    ),
    messageId: fc.uuid()
  },
  { requiredKeys: ['type'] }
)

function outcome(actionKey: (typeof actionKeys)[number], payload: unknown) {
  try {
    return toCommand(actionKey, payload, {})
  } catch (error) {
    return { threw: (error as { code?: string; field?: string }).code, field: (error as { field?: string }).field }
  }
}

// CPU-bound property tests: on a busy 2-core CI machine they take several times their idle duration.
describe('the presets fast path equals mapping-kit', { timeout: 180_000 }, () => {
  it('resolves every action default mapping exactly as transform() does (2,000 generated events per action)', () => {
    for (const actionKey of actionKeys) {
      const mapping = defaultMapping(actions[actionKey].fields) as Parameters<typeof transform>[0]
      fc.assert(
        fc.property(event, (e) => {
          const fast = resolveDefaultPayload(actionKey, e)
          const kit = transform(mapping, e as Record<string, unknown>)
          expect(fast).toEqual(kit)
          expect(outcome(actionKey, fast)).toEqual(outcome(actionKey, kit))
        }),
        { numRuns: 2000 }
      )
    }
  })

  it('routes like Segment: presets through FQL and mapping-kit give the same results (1,000 events)', () => {
    const compiled = compileSubscriptions(
      presets.map(({ name, subscribe, partnerAction, mapping }) => ({ name, subscribe, partnerAction, mapping }))
    )
    fc.assert(
      fc.property(event, (e) => {
        expect(mapWithPresets(e)).toEqual(mapWithSubscriptions(e, compiled))
      }),
      { numRuns: 1000 }
    )
  })

  it("the plugin's direct preset path gives mapWithPresets' outcomes (3,000 events; an invalid field is named alike)", () => {
    const comparable = (o: ReturnType<typeof presetOutcome>) =>
      o.kind === 'invalid' ? { kind: 'invalid', field: o.error.field, reason: o.error.reason } : o
    fc.assert(
      fc.property(event, fc.constantFrom('1Flow', '1Flow Web (Actions)'), (e, name) => {
        const generic = mapWithPresets(e, { integrationName: name })
        expect(generic).toHaveLength(1)
        expect(comparable(presetOutcome(e, name))).toEqual(comparable(generic[0]!.outcome))
      }),
      { numRuns: 3000 }
    )
  })
})
