/** The real @segment/analytics-node client, its host pointed at the relay. */
import { Analytics } from '@segment/analytics-node'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { startRelay, until, WRITE_KEY, type TestRelay } from './helpers'

let fake: FakeOneFlowApi
let relay: TestRelay
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
  relay = await startRelay(fake, {
    sources: [
      {
        name: 'server',
        writeKey: WRITE_KEY,
        projectApiKey: 'test-project-key',
        mappings: [
          { name: 'Track Event', subscribe: 'type = "track"', partnerAction: 'trackEvent' },
          { name: 'Identify User', subscribe: 'type = "identify"', partnerAction: 'identifyUser' },
          { name: 'Page views', subscribe: 'type = "page"', partnerAction: 'trackPage' }
        ]
      }
    ]
  })
})
afterAll(async () => {
  await relay.stop()
  await fake.close()
})

it('delivers identify, track and page from analytics-node through the relay to 1Flow', async () => {
  const analytics = new Analytics({ writeKey: WRITE_KEY, host: relay.url, flushAt: 2, flushInterval: 100 })
  const failures: unknown[] = []
  analytics.on('error', (e) => failures.push(e))
  analytics.identify({ userId: 'user-1', traits: { email: 'ada@example.com', plan: 'pro' } })
  analytics.track({ userId: 'user-1', event: 'Signed Up', properties: { plan: 'pro', seats: 3 } })
  analytics.page({
    userId: 'user-1',
    name: 'Pricing',
    properties: { path: '/pricing', url: 'https://example.com/pricing', title: 'Pricing' }
  })
  await analytics.closeAndFlush()
  expect(failures).toEqual([])
  await until(() => fake.accepted.length === 3, 'three messages at 1Flow')
  const byType = (type: string) => fake.accepted.filter((m) => m.type === type).map((m) => m.body)
  expect(byType('identify')).toEqual([
    {
      user_id: 'user-1',
      traits: { email: 'ada@example.com', plan: 'pro' },
      timestamp: expect.stringMatching(/^\d{4}-/)
    }
  ])
  expect(byType('track')).toEqual(
    expect.arrayContaining([
      { event: 'Signed Up', user_id: 'user-1', properties: { plan: 'pro', seats: 3 }, timestamp: expect.any(String) },
      {
        event: 'page_view',
        user_id: 'user-1',
        properties: { name: 'Pricing', path: '/pricing', url: 'https://example.com/pricing', title: 'Pricing' },
        timestamp: expect.any(String)
      }
    ])
  )
})
