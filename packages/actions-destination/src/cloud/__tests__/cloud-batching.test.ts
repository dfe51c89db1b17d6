/**
 * Cloud mode's batching switches, as Segment's platform uses them: `enable_batching` off (the default) means one
 * request per event through `perform`; on, the platform hands `performBatch` up to `batch_size` events, which go
 * to 1Flow's /batch in requests of at most `batch_size` events and 480 KB.
 */
import { Destination } from '@segment/actions-core'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { actions, cloudBatchingFields, defaultMapping } from '@oneflow-seg/core'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { destination } from '../index'

let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
})
afterAll(() => fake.close())
beforeEach(() => fake.reset())

const track = (n: number) => ({ type: 'track', event: `E${n}`, userId: `u${n}`, properties: { n }, messageId: `m${n}` })
const settings = (mapping: Record<string, unknown>) =>
  ({
    projectApiKey: 'test-project-key',
    apiBaseUrl: fake.url,
    subscriptions: [{ name: 'Track Event', subscribe: 'type = "track"', partnerAction: 'trackEvent', mapping }]
  }) as never

describe('the batching switches on every cloud action', () => {
  it.each(Object.keys(destination.actions))(
    '%s has enable_batching (default off) and batch_size (default 500)',
    (key) => {
      const fields = destination.actions[key as keyof typeof destination.actions]!.fields
      expect(fields.enable_batching).toMatchObject({ type: 'boolean', default: false })
      expect(fields.batch_size).toMatchObject({ type: 'number', default: 500, minimum: 1, maximum: 1000 })
      expect(Object.keys(fields)).toEqual([
        ...Object.keys(actions[key as keyof typeof actions].fields),
        ...Object.keys(cloudBatchingFields)
      ])
    }
  )
})

describe('through Destination', () => {
  const mapping = defaultMapping(destination.actions.trackEvent!.fields)

  it('without batching: one /track request per event (perform)', async () => {
    expect(mapping).toMatchObject({ enable_batching: false, batch_size: 500 })
    for (let i = 0; i < 3; i++) await new Destination(destination).onEvent(track(i) as never, settings(mapping))
    expect(fake.requests.map((r) => [r.path, r.status])).toEqual([
      ['/track', 200],
      ['/track', 200],
      ['/track', 200]
    ])
  })

  it('with batching: /batch requests of at most batch_size events, one multistatus entry per event (performBatch)', async () => {
    const result = await new Destination(destination).onBatch(
      Array.from({ length: 5 }, (_, i) => track(i)) as never,
      settings({ ...mapping, enable_batching: true, batch_size: 2 })
    )
    const entries = (result[0] as unknown as { multistatus: Array<{ status: number }> }).multistatus
    expect(entries.map((e) => e.status)).toEqual([200, 200, 200, 200, 200])
    expect(fake.requests.map((r) => [r.path, (r.body as { batch: unknown[] }).batch.length])).toEqual([
      ['/batch', 2],
      ['/batch', 2],
      ['/batch', 1]
    ])
    expect(fake.accepted.map((m) => m.body.event)).toEqual(['E0', 'E1', 'E2', 'E3', 'E4'])
  })
})
