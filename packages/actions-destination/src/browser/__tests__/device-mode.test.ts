/**
 * "1Flow Web (Actions)" in real headless Chromium, loaded by real analytics-next 1.84.3 the way Segment's
 * CDN settings load it (remotePlugins + plugin factory). 1Flow's SDK URL is answered by testkit's recording
 * SDK — on time, late, with 404, or never.
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
  startTestPage,
  withOpenPage,
  type OpenedPage,
  type SdkServing
} from '@oneflow-seg/testkit'
import type { Browser } from 'playwright-core'
import type { Harness } from './page'

const DEST = '1Flow Web (Actions)'
let testPage: Awaited<ReturnType<typeof startTestPage>>
let browser: Browser
let server: PageServer

beforeAll(async () => {
  testPage = await startTestPage(join(dirname(fileURLToPath(import.meta.url)), 'page.ts'))
  ;({ browser, server } = testPage)
}, 60_000)
afterAll(() => testPage?.close())

type H = { harness: Harness }
const start = (p: OpenedPage, settings: Record<string, unknown> = { projectApiKey: 'k1' }, subscriptions?: unknown[]) =>
  p.page.evaluate(
    ([s, subs]) => (window as unknown as H).harness.start({ settings: s, subscriptions: subs as never }),
    [settings, subscriptions] as const
  )
const { send, fire, state } = harnessCalls<Harness>()

const withPage = <T>(sdk: SdkServing, body: (p: OpenedPage) => Promise<T>) => withOpenPage(browser, server, sdk, body)

// What both browser adapters do alike: fixtures, the right person, consent, loading (testkit's browser suite).
describeBrowserAdapter({
  name: 'device mode',
  adapter: 'device-mode',
  pageEntry: join(dirname(fileURLToPath(import.meta.url)), 'page.ts'),
  start: (p, settings, options = {}) =>
    p.page.evaluate(
      ([s, subs, persist]) =>
        (window as unknown as H).harness.start({ settings: s, subscriptions: subs as never, persist }),
      [settings, options.subscriptions as unknown[] | undefined, options.persist === true] as const
    ),
  // Analytics.js reports a destination whose initialize threw on the console, and drops it.
  async configError(p, id, expected) {
    const failed = () =>
      p.page.evaluate(([i, name]) => (window as unknown as H).harness.state(i).failedInitializations.includes(name), [
        id,
        DEST
      ] as const)
    if (expected) await expect.poll(failed, { timeout: 5_000 }).toBe(true)
    else if (!(await failed())) return null
    return p.console.filter((line) => line.includes(DEST)).at(-1) ?? ''
  }
})

describe('device mode: loading', () => {
  it('loads the SDK from sdkUrl with data-api-key, once', () =>
    withPage({}, async (p) => {
      const id = await start(p, { projectApiKey: 'project-key-1' })
      await send(p, id, events[1])
      const seen = await state(p, id)
      expect(seen.apiKey).toBe('project-key-1')
      expect(seen.sdkScripts).toBe(1)
      expect(p.sdkRequests).toEqual(['https://1flow.app/js/1flow.js'])
      expect(p.aborted).toEqual([])
    }))

  it.each([
    ['answers 404', { status: 404 } as SdkServing, 5_000],
    ['never answers', { hang: true } as SdkServing, 14_000]
  ])(
    'SDK %s: loading fails by the deadline, other destinations get every event, no timer keeps firing',
    async (_what, sdk, waitMs) =>
      withPage(sdk, async (p) => {
        const id = await start(p)
        for (const e of events) await fire(p, id, e)
        await p.page.waitForFunction(
          (name) => (window as unknown as H).harness.state(0).failedInitializations.includes(name),
          DEST,
          { timeout: waitMs }
        )
        const failed = await state(p, id)
        expect(failed.calls).toEqual([])
        expect(failed.plain).toEqual(labels)
        expect(failed.registered.filter((n) => n.startsWith(DEST))).toEqual([])
        expect(p.console.join('\n')).toContain('https://1flow.app/js/1flow.js')
        // Later events still reach the other destination at once, and nothing of ours is left ticking.
        expect(await afterFailedLoad(p, id)).toEqual({ timerFires: 0, lastPlain: 'track:After', calls: [] })
      }),
    30_000
  )

  it('a second initialization after a successful load keeps the loaded SDK and injects no second script', () =>
    withPage({}, async (p) => {
      const first = await start(p)
      await send(p, first, events[1])
      const second = await start(p, { projectApiKey: 'k1' })
      await send(p, second, events[2])
      await send(p, first, events[4])
      const seen = await state(p, second)
      expect(seen.sdkScripts).toBe(1)
      expect(seen.loads).toBe(1)
      expect(p.sdkRequests).toHaveLength(1)
      // Each instance hands the track's user to the SDK once before its first event of that user.
      const introduce = (user: string) => ['logUser', user, undefined]
      expect(seen.calls).toEqual([
        introduce('u0'),
        expectedCalls[1],
        introduce('u0'),
        expectedCalls[2],
        introduce('u3'),
        expectedCalls[4]
      ])
    }))

  it("hands a track's User ID to the SDK before the event when the SDK has not been given it on this page", () =>
    withPage({}, async (p) => {
      const id = await start(p)
      await send(p, id, {
        type: 'track',
        event: 'Viewed Pricing',
        userId: 'returning-user',
        properties: { plan: 'pro' }
      })
      await send(p, id, { type: 'track', event: 'Started Trial', userId: 'returning-user', anonymousId: 'anon-9' })
      await send(p, id, { type: 'identify', userId: 'other-user', traits: { plan: 'free' } })
      await send(p, id, { type: 'track', event: 'Anonymous', anonymousId: 'anon-9' })
      expect((await state(p, id)).calls).toEqual([
        ['logUser', 'returning-user', undefined],
        ['logEvent', 'Viewed Pricing', { plan: 'pro' }],
        ['logEvent', 'Started Trial', {}],
        ['logUser', 'other-user', { plan: 'free' }],
        ['logEvent', 'Anonymous', {}]
      ])
    }))

  it('takes the SDK load deadline from the loadTimeoutMs setting', () =>
    withPage({ hang: true }, async (p) => {
      const id = await start(p, { projectApiKey: 'k1', loadTimeoutMs: 1_500 })
      await fire(p, id, events[1])
      // The load fails well before the default 10 s deadline (the wait gives up at 8 s), and says which it used.
      await p.page.waitForFunction(
        (name) => (window as unknown as H).harness.state(0).failedInitializations.includes(name),
        DEST,
        { timeout: 8_000 }
      )
      expect(p.console.join('\n')).toContain('no usable SDK within 1500 ms')
    }))
})
