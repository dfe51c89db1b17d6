/**
 * The Analytics.js plugin in real headless Chromium with real analytics-next 1.84.3
 * (`analytics.register(oneFlow(...))`); 1Flow's SDK URL answered by testkit's recording SDK.
 */
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { describeBrowserAdapter } from '@oneflow-seg/testkit/browser-suite'
import {
  afterFailedLoad,
  harnessCalls,
  ORDERING_CALLS as expectedCalls,
  ORDERING_EVENTS as events,
  ORDERING_LABELS as labels,
  type PageServer,
  sdkHasCalls,
  startTestPage,
  withOpenPage,
  type OpenedPage,
  type SdkServing
} from '@oneflow-seg/testkit'
import type { Browser, Route } from 'playwright-core'
import type { OneFlowPluginOptions } from '../index'
import type { Harness } from './page'

let testPage: Awaited<ReturnType<typeof startTestPage>>
let browser: Browser
let server: PageServer

beforeAll(async () => {
  testPage = await startTestPage(join(dirname(fileURLToPath(import.meta.url)), 'page.ts'))
  ;({ browser, server } = testPage)
}, 60_000)
afterAll(() => testPage?.close())

type H = { harness: Harness }
const start = (p: OpenedPage, options: Partial<OneFlowPluginOptions> = {}) =>
  p.page.evaluate((o) => (window as unknown as H).harness.start(o as OneFlowPluginOptions), {
    projectApiKey: 'k1',
    ...options
  })
const { send, fire, state } = harnessCalls<Harness>()
/** What the SDK gets first for a track of user u0 on a page that has not been given u0. */
const introduceU0 = ['logUser', 'u0', undefined]

/** Holds the plugin's delivery chunk until `releaseChunk()`, then answers it with `answer`; `chunks` lists its requests. */
async function holdDeliveryChunk(p: OpenedPage, answer: (route: Route) => Promise<void>) {
  let releaseChunk = () => {}
  const chunkHeld = new Promise<void>((resolve) => (releaseChunk = resolve))
  const chunks: string[] = []
  await p.context.route(/\/delivery-[^/]*\.js$/, async (route) => {
    chunks.push(route.request().url())
    await chunkHeld
    await answer(route)
  })
  return { chunks, releaseChunk }
}

const withPage = <T>(sdk: SdkServing, body: (p: OpenedPage) => Promise<T>) => withOpenPage(browser, server, sdk, body)

// What both browser adapters do alike: fixtures, the right person, consent, loading (testkit's browser suite).
describeBrowserAdapter({
  name: 'plugin',
  adapter: 'browser',
  pageEntry: join(dirname(fileURLToPath(import.meta.url)), 'page.ts'),
  // The destination's settings are the plugin's options; subscriptions are its custom mappings.
  start: (p, settings, options = {}) =>
    p.page.evaluate((o) => (window as unknown as H).harness.start(o as OneFlowPluginOptions), {
      ...(settings as Partial<OneFlowPluginOptions>),
      ...(options.subscriptions && { mappings: options.subscriptions as never }),
      persist: options.persist === true
    }),
  // The plugin throws bad options at once and fails its load on bad mappings; send() waited for the load.
  configError: async (p, id) => (await state(p, id)).error
})

describe('plugin: loading and buffering', () => {
  it('is a destination plugin named 1Flow with a version, loading the SDK with data-api-key once', () =>
    withPage({}, async (p) => {
      const id = await start(p, { projectApiKey: 'project-key-1' })
      await send(p, id, events[1])
      const seen = await state(p, id)
      expect(seen.registered).toContain('1Flow')
      expect(seen.loaded).toBe(true)
      expect(seen.apiKey).toBe('project-key-1')
      expect(seen.sdkScripts).toBe(1)
      expect(p.sdkRequests).toEqual(['https://1flow.app/js/1flow.js'])
      // The track's user is handed to the SDK before its first event (a fresh page has been given no user).
      expect(seen.calls).toEqual([introduceU0, expectedCalls[1]])
    }))

  it.each([
    ['answers 404 (once every event is sent)', { status: 404, held: true } as SdkServing],
    ['never answers', { hang: true } as SdkServing]
  ])(
    'SDK %s: loading fails by the deadline, buffered events are dropped with a reason, other destinations get every event, no timer keeps firing',
    (_what, sdk) =>
      withPage(sdk, async (p) => {
        // Long enough for a loaded machine to send the 10 events first; a held 404 does not depend on it.
        const id = await start(p, { loadTimeoutMs: 3000 })
        for (const e of events) await fire(p, id, e)
        p.releaseSdk()
        await p.page.waitForFunction(() => (window as unknown as H).harness.state(0).error !== null, undefined, {
          timeout: 10_000
        })
        const failed = await state(p, id)
        expect(failed.error).toContain('https://1flow.app/js/1flow.js')
        expect(failed.calls).toEqual([])
        expect(failed.plain).toEqual(labels)
        expect(failed.registered).not.toContain('1Flow')
        expect(failed.logs.filter((l) => l.startsWith('warn: 1Flow: not sent.'))).toHaveLength(10)
        expect(p.console.join('\n')).toContain('10 waiting events dropped')
        expect(await afterFailedLoad(p, id)).toEqual({ timerFires: 0, lastPlain: 'track:After', calls: [] })
      })
  )

  it("downloads 1Flow's SDK beside its delivery chunk, not after it", () =>
    withPage({}, async (p) => {
      const { chunks, releaseChunk } = await holdDeliveryChunk(p, (route) => route.continue())
      const id = await start(p)
      for (const e of events.slice(0, 2)) await fire(p, id, e)
      await expect.poll(() => p.sdkRequests.length, { timeout: 10_000 }).toBe(1)
      expect(chunks).toHaveLength(1)
      expect((await state(p, id)).calls).toEqual([])
      releaseChunk()
      await p.page.waitForFunction(sdkHasCalls, 2, { timeout: 10_000 })
      expect((await state(p, id)).calls).toEqual(expectedCalls.slice(0, 2))
    }))

  it('a delivery chunk that does not load fails the plugin like an SDK that does not: events dropped with a reason', () =>
    withPage({}, async (p) => {
      const { releaseChunk } = await holdDeliveryChunk(p, (route) => route.fulfill({ status: 404, body: 'gone' }))
      const id = await start(p)
      for (const e of events) await fire(p, id, e)
      releaseChunk()
      await p.page.waitForFunction(() => (window as unknown as H).harness.state(0).error !== null, undefined, {
        timeout: 10_000
      })
      const failed = await state(p, id)
      expect(failed.error).toContain("the Analytics.js plugin's delivery code did not load")
      expect(failed.calls).toEqual([])
      expect(failed.plain).toEqual(labels)
      expect(failed.logs.filter((l) => l.startsWith('warn: 1Flow: not sent.'))).toHaveLength(events.length)
    }))

  it('keeps at most bufferLimit events while loading and says why the others were dropped', () =>
    withPage({ held: true }, async (p) => {
      const id = await start(p, { bufferLimit: 4 })
      for (const e of events) await fire(p, id, e)
      p.releaseSdk()
      await p.page.waitForFunction(sdkHasCalls, 4)
      const seen = await state(p, id)
      expect(seen.calls).toEqual(expectedCalls.slice(0, 4))
      expect(seen.logs.filter((l) => l.includes('4 events already wait'))).toHaveLength(6)
    }))

  it('a second initialization after a successful load keeps the loaded SDK and injects no second script', () =>
    withPage({}, async (p) => {
      const first = await start(p)
      await send(p, first, events[1])
      const second = await start(p)
      await send(p, second, events[2])
      await send(p, first, events[4])
      const seen = await state(p, second)
      expect(seen.sdkScripts).toBe(1)
      expect(seen.loads).toBe(1)
      expect(p.sdkRequests).toHaveLength(1)
      expect(seen.calls).toEqual([
        introduceU0,
        expectedCalls[1],
        introduceU0,
        expectedCalls[2],
        ['logUser', 'u3', undefined],
        expectedCalls[4]
      ])
    }))

  it('fetches its delivery code when it loads, and mapping-kit and FQL only for custom mappings, each as a separate chunk', async () => {
    const chunkRequests = () => server.requests.filter((r) => r !== '/' && r !== '/entry.js')
    const isMappingChunk = (r: string) => r.startsWith('/mapping')
    await withPage({}, async (p) => {
      server.requests.length = 0
      const id = await start(p)
      await send(p, id, events[1])
      expect((await state(p, id)).calls).toEqual([introduceU0, expectedCalls[1]])
      expect(chunkRequests().filter((r) => r.startsWith('/delivery-'))).toHaveLength(1)
      expect(chunkRequests().filter(isMappingChunk)).toEqual([])
    })
    await withPage({}, async (p) => {
      server.requests.length = 0
      const id = await start(p, {
        mappings: [{ name: 'Only E1', subscribe: 'type = "track" and event = "E1"', partnerAction: 'trackEvent' }]
      })
      await send(p, id, events[1])
      await send(p, id, events[2])
      expect((await state(p, id)).calls).toEqual([introduceU0, expectedCalls[1]])
      expect(chunkRequests().filter(isMappingChunk)).toHaveLength(1)
    })
  })

  it('refuses bad options at once with an error naming the option', () =>
    withPage({}, async (p) => {
      for (const [options, key] of [
        [{ projectApiKey: '' }, 'projectApiKey'],
        [{ bufferLimit: 0 }, 'bufferLimit'],
        [{ loadTimeoutMs: -1 }, 'loadTimeoutMs'],
        [{ sdkUrl: 'not a url' }, 'sdkUrl']
      ] as const) {
        const id = await start(p, options as Partial<OneFlowPluginOptions>)
        expect((await state(p, id)).error).toContain(`"${key}"`)
      }
    }))
})
