/**
 * core-mapping: events/s of core's preset fast path (resolve + validate + command) against mapping-kit's
 * transform() with the same preset mappings + the same command construction, on the same events in the
 * same run. Rounds alternate so that both sides see the same machine state; the median round counts.
 */
import { transform } from '@segment/actions-core/mapping-kit'
import { finishRoutes, mapWithPresets, presets, type Route, type SegmentEvent } from '@oneflow-seg/core'
import { machine, median } from './_machine'

const EVENTS = 5_000
const ROUNDS = 7
const ROUND_MS = 400

function makeEvents(): SegmentEvent[] {
  const events: SegmentEvent[] = []
  for (let i = 0; i < EVENTS; i++) {
    const common = {
      messageId: `m-${i}`,
      timestamp: new Date(1_700_000_000_000 + i).toISOString(),
      anonymousId: `anon-${i % 97}`,
      context: { library: { name: 'analytics.js' }, page: { path: '/p' } }
    }
    events.push(
      i % 4 === 0
        ? {
            ...common,
            type: 'identify',
            userId: `user-${i}`,
            traits: {
              email: `u${i}@example.com`,
              plan: i % 2 ? 'pro' : 'free',
              seats: i % 50,
              company: { name: 'Acme', size: 120 }
            }
          }
        : {
            ...common,
            type: 'track',
            userId: i % 3 ? `user-${i}` : undefined,
            event: `Event ${i % 20}`,
            properties: { plan: 'pro', value: i, items: [{ sku: 'a', qty: 1 }], flag: i % 2 === 0 }
          }
    )
  }
  // As a relay or Segment receives them: parsed from JSON.
  return JSON.parse(JSON.stringify(events)) as SegmentEvent[]
}

const presetByType = new Map(presets.map((p) => [p.subscribe.match(/"(.+)"/)?.[1], p]))

// The baseline: what an adapter without a fast path does — mapping-kit's transform() on the preset mapping.
function mapWithMappingKit(event: SegmentEvent) {
  const preset = presetByType.get(event.type)
  const routes: Route[] = preset
    ? [
        {
          subscription: preset.name,
          actionKey: preset.partnerAction,
          payload: transform(preset.mapping as Parameters<typeof transform>[0], event as Record<string, unknown>)
        }
      ]
    : []
  return finishRoutes(event, routes)
}

function rate(events: SegmentEvent[], fn: (e: SegmentEvent) => unknown): number {
  let n = 0
  let sink = 0
  const start = performance.now()
  let elapsed = 0
  while (elapsed < ROUND_MS) {
    for (const e of events) sink += (fn(e) as unknown[]).length
    n += events.length
    elapsed = performance.now() - start
  }
  if (sink < 0) console.log(sink)
  return (n / elapsed) * 1000
}

const events = makeEvents()
// Both sides must agree before they are timed.
for (const e of events.slice(0, 500)) {
  if (JSON.stringify(mapWithPresets(e)) !== JSON.stringify(mapWithMappingKit(e)))
    throw new Error('fast path and mapping-kit disagree')
}
rate(events, mapWithPresets)
rate(events, mapWithMappingKit)
const ours: number[] = []
const baseline: number[] = []
for (let r = 0; r < ROUNDS; r++) {
  ours.push(rate(events, mapWithPresets))
  baseline.push(rate(events, mapWithMappingKit))
}
const o = median(ours)
const b = median(baseline)
console.log(
  JSON.stringify({
    machine: machine(),
    rounds: ROUNDS,
    events: EVENTS,
    ours_rounds: ours.map(Math.round),
    baseline_rounds: baseline.map(Math.round)
  })
)
console.log(
  JSON.stringify({
    bench: 'core-mapping',
    ours_events_per_s: Math.round(o),
    baseline_events_per_s: Math.round(b),
    ratio: Math.round((o / b) * 100) / 100
  })
)
