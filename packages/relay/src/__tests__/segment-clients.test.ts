/**
 * Segment's own clients, pointed at the relay as their users would point them: Analytics.js 2.0 in real
 * Chromium (standard and batching delivery, cross-origin, so CORS is exercised), the legacy `analytics-node`
 * 6.x npm client. Every relay answer is 2xx and the 1Flow stand-in receives the right bodies.
 * (`@segment/analytics-node` has its own file.)
 */
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import LegacyAnalytics from 'analytics-node'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { bundlePage, FakeOneFlowApi, launchChromium, PageServer } from '@oneflow-seg/testkit'
import { startRelay, until, WRITE_KEY, type TestRelay } from './helpers'

const PAGE = join(fileURLToPath(new URL('.', import.meta.url)), 'pages', 'analytics-next-page.ts')
const MAPPINGS = [
  { name: 'Track Event', subscribe: 'type = "track"', partnerAction: 'trackEvent' },
  { name: 'Identify User', subscribe: 'type = "identify"', partnerAction: 'identifyUser' },
  { name: 'Page views', subscribe: 'type = "page"', partnerAction: 'trackPage' }
]

let fake: FakeOneFlowApi
let relay: TestRelay
let browser: Browser
let pages: PageServer
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
  relay = await startRelay(fake, {
    sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: 'test-project-key', mappings: MAPPINGS }]
  })
  pages = await PageServer.start(await bundlePage(PAGE))
  browser = await launchChromium()
}, 60_000)
afterAll(async () => {
  await browser?.close()
  await pages?.close()
  await relay?.stop()
  await fake?.close()
})
beforeEach(() => fake.reset())

/** What 1Flow must receive for the page's identify, track and page, whichever client sent them. */
const expectDelivered = () => {
  const bodies = (type: string) => fake.accepted.filter((m) => m.type === type).map((m) => m.body)
  expect(bodies('identify')).toEqual([
    {
      user_id: 'user-7',
      traits: { email: 'ada@example.com', plan: 'pro' },
      timestamp: expect.stringMatching(/^\d{4}-/)
    }
  ])
  expect(bodies('track')).toEqual([
    {
      event: 'Signed Up',
      user_id: 'user-7',
      anonymous_id: expect.any(String),
      properties: { plan: 'pro', seats: 3 },
      timestamp: expect.any(String)
    },
    {
      event: 'page_view',
      user_id: 'user-7',
      anonymous_id: expect.any(String),
      properties: expect.objectContaining({
        name: 'Pricing',
        path: '/pricing',
        url: 'https://example.com/pricing',
        title: 'Pricing'
      }),
      timestamp: expect.any(String)
    }
  ])
}

const relayMetric = async (pattern: RegExp) =>
  Number(pattern.exec(await (await fetch(`${relay.url}/metrics`)).text())?.[1] ?? 0)

describe('Analytics.js 2.0 (@segment/analytics-next) in Chromium, the relay as its apiHost', () => {
  it.each([
    ['standard delivery (/v1/i, /v1/t, /v1/p)', false, ['/v1/i', '/v1/t', '/v1/p']],
    ['batching delivery (/v1/b)', true, ['/v1/b']]
  ])(
    '%s: every answer 2xx, 1Flow gets identify, track and page',
    async (_what, batching, paths) => {
      const context = await browser.newContext()
      await context.route('**/*', (route) =>
        new URL(route.request().url()).hostname === '127.0.0.1' ? route.continue() : route.abort()
      )
      const page = await context.newPage()
      const answers: Array<[string, string, number]> = []
      const failed: string[] = []
      page.on(
        'response',
        (r) =>
          r.url().startsWith(relay.url) && answers.push([r.request().method(), new URL(r.url()).pathname, r.status()])
      )
      page.on('requestfailed', (r) => failed.push(`${r.url()}: ${r.failure()?.errorText}`))
      await page.goto(`${pages.origin}/`)
      await page.waitForFunction(() => (window as { harness?: unknown }).harness !== undefined)
      const apiHost = `${new URL(relay.url).host}/v1`
      await page.evaluate(
        ([writeKey, host, b]) =>
          (window as unknown as { harness: { start(o: unknown): Promise<void> } }).harness.start({
            writeKey,
            apiHost: host,
            batching: b
          }),
        [WRITE_KEY, apiHost, batching] as const
      )
      await page.evaluate(() => (window as unknown as { harness: { send(): Promise<void> } }).harness.send())
      await until(() => fake.accepted.length === 3, 'identify, track and page at 1Flow', 15_000)
      expectDelivered()
      const posts = answers.filter(([method]) => method === 'POST')
      expect(failed).toEqual([])
      expect(posts.length).toBeGreaterThan(0)
      for (const [, , status] of answers) expect(status).toBeLessThan(300)
      expect([...new Set(posts.map(([, path]) => path).filter((p) => p !== '/v1/m'))].sort()).toEqual([...paths].sort())
      await context.close()
    },
    60_000
  )

  it("answers analytics.js's own telemetry (/v1/m) at once, without queueing it", async () => {
    const before = (await relay.relay.queue.stats(Date.now())).pending
    const res = await fetch(`${relay.url}/v1/m`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: '{"series":[{"type":"Counter","metric":"analytics_js.invoke.track","value":1}]}'
    })
    expect(res.status).toBe(204)
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
    expect((await relay.relay.queue.stats(Date.now())).pending).toBe(before)
    expect(await relayMetric(/relay_ingest_requests_total\{route="telemetry",status="204"\} (\d+)/)).toBeGreaterThan(0)
  })
})

describe('the legacy analytics-node 6.x npm client', () => {
  it('delivers identify, track and page through the relay to 1Flow', async () => {
    const analytics = new LegacyAnalytics(WRITE_KEY, { host: relay.url, flushAt: 10, flushInterval: 100, enable: true })
    const errors: unknown[] = []
    analytics.identify({ userId: 'user-7', traits: { email: 'ada@example.com', plan: 'pro' } })
    analytics.track({
      userId: 'user-7',
      anonymousId: 'anon-7',
      event: 'Signed Up',
      properties: { plan: 'pro', seats: 3 }
    })
    analytics.page({
      userId: 'user-7',
      anonymousId: 'anon-7',
      name: 'Pricing',
      properties: { path: '/pricing', url: 'https://example.com/pricing', title: 'Pricing' }
    })
    await new Promise<void>((resolve) => analytics.flush((error?: unknown) => (error && errors.push(error), resolve())))
    expect(errors).toEqual([])
    await until(() => fake.accepted.length === 3, 'identify, track and page at 1Flow')
    expectDelivered()
  })
})
