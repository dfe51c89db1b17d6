/**
 * The drop-in README shows for device mode: Analytics.js loads the workspace's settings from Segment's CDN (here a
 * stub answering for cdn.segment.com, listing 1Flow and another destination), and the `plugins` option replaces
 * Segment's build of "1Flow Web (Actions)" with this package's, while the other destination still loads from the
 * CDN. In real Chromium, with real analytics-next.
 */
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { bundlePage, launchChromium, PageServer, recordingSdkScript, sdkHasCalls } from '@oneflow-seg/testkit'

const WRITE_KEY = 'wk_cdn_drop_in'
const SEGMENTS_1FLOW_BUILD = 'https://cdn.segment.com/next-integrations/actions/1flow/0123456789.js'
const OTHER_BUILD = 'https://cdn.segment.com/next-integrations/actions/other/abcdef.js'
const subscriptions = [
  {
    name: 'Track Event',
    subscribe: 'type = "track"',
    partnerAction: 'trackEvent',
    enabled: true,
    mapping: {
      event_name: { '@path': '$.event' },
      userId: { '@path': '$.userId' },
      properties: { '@path': '$.properties' }
    }
  }
]
const CDN_SETTINGS = {
  integrations: {
    'Segment.io': { apiKey: WRITE_KEY },
    'Other Web (Actions)': { versionSettings: { componentTypes: [] } }
  },
  remotePlugins: [
    {
      name: '1Flow Web (Actions)',
      creationName: '1Flow Web (Actions)',
      libraryName: '1flowDestination',
      url: SEGMENTS_1FLOW_BUILD,
      settings: { projectApiKey: 'pk-from-cdn', subscriptions }
    },
    {
      name: 'Other Web (Actions)',
      creationName: 'Other Web (Actions)',
      libraryName: 'otherDestination',
      url: OTHER_BUILD,
      settings: {}
    }
  ]
}
// The other destination's build: a plugin factory recording what it receives.
const OTHER_SCRIPT = `window.otherDestination = async function () {
  window.__other = [];
  return { name: 'Other Web (Actions)', type: 'destination', version: '1.0.0', isLoaded: function () { return true },
    load: function () { return Promise.resolve() }, track: function (ctx) { window.__other.push(ctx.event.event); return Promise.resolve(ctx) } };
};`

let browser: Browser
let server: PageServer
beforeAll(async () => {
  server = await PageServer.start(await bundlePage(join(dirname(fileURLToPath(import.meta.url)), 'cdn-page.ts')))
  browser = await launchChromium()
}, 60_000)
afterAll(async () => {
  await browser?.close()
  await server?.close()
})

it("keeps the workspace's CDN settings: this package's build replaces Segment's, the other destination still loads", async () => {
  const context = await browser.newContext()
  const requested: string[] = []
  await context.route('**/*', async (route) => {
    const url = route.request().url()
    requested.push(url.split('?')[0]!)
    if (url.startsWith(`https://cdn.segment.com/v1/projects/${WRITE_KEY}/settings`))
      return route.fulfill({ json: CDN_SETTINGS })
    if (url === OTHER_BUILD) return route.fulfill({ contentType: 'text/javascript', body: OTHER_SCRIPT })
    if (url.split('?')[0] === 'https://1flow.app/js/1flow.js')
      return route.fulfill({ contentType: 'text/javascript', body: recordingSdkScript() })
    if (new URL(url).hostname === '127.0.0.1') return route.continue()
    return route.abort()
  })
  try {
    const page = await context.newPage()
    await page.goto(`${server.origin}/`)
    await page.waitForFunction(() => (window as { harness?: unknown }).harness !== undefined)
    await page.evaluate(
      (key) => (window as unknown as { harness: { start(k: string): Promise<void> } }).harness.start(key),
      WRITE_KEY
    )
    await page.evaluate(() =>
      (window as unknown as { harness: { track(e: string, p: object): Promise<void> } }).harness.track('Signed Up', {
        plan: 'pro'
      })
    )
    await page.waitForFunction(sdkHasCalls, 1, { timeout: 15_000 })
    await page.waitForFunction(
      () => ((window as unknown as { __other?: string[] }).__other ?? []).length > 0,
      undefined,
      { timeout: 15_000 }
    )
    const seen = await page.evaluate(() => {
      const w = window as unknown as { __oneflowRecorder: { calls: unknown[]; apiKey: string }; __other: string[] }
      return { calls: w.__oneflowRecorder.calls, apiKey: w.__oneflowRecorder.apiKey, other: w.__other }
    })
    expect(seen.calls).toEqual([['logEvent', 'Signed Up', { plan: 'pro' }]])
    // The settings came from the workspace (the CDN), the code from this package: Segment's build was never fetched.
    expect(seen.apiKey).toBe('pk-from-cdn')
    expect(requested).not.toContain(SEGMENTS_1FLOW_BUILD)
    expect(requested).toContain(OTHER_BUILD)
    expect(seen.other).toEqual(['Signed Up'])
  } finally {
    await context.close()
  }
}, 60_000)
