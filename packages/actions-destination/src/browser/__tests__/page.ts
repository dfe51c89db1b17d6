// The device-mode test page: real analytics-next 1.84.3 loading this destination the way Segment's CDN
// settings do (remotePlugins + a plugin factory), plus a plain destination and a fixture injector.
import { AnalyticsBrowser, Context, type Analytics } from '@segment/analytics-next'
import { actions, defaultMapping, isActionKey, presets } from '@oneflow-seg/core'
import {
  FixtureInjector,
  plainRecorder,
  recordContextLogs,
  recordedState,
  resetRecorded,
  reviveFixtureJson
} from '@oneflow-seg/testkit/browser'
import oneFlowDestination, { destination } from '../index'

const logs = recordContextLogs(Context as never)

interface StartOptions {
  readonly settings: Record<string, unknown>
  readonly subscriptions?: ReadonlyArray<Record<string, unknown>>
  /** Keep Analytics.js's user in the browser's storage (as sites do), so a later page of the context knows it. */
  readonly persist?: boolean
}

// Segment stores every subscription with its full mapping and enabled: true; fill in what fixtures leave out.
function subscriptionsFor(subs: StartOptions['subscriptions']) {
  type Sub = { name?: string; subscribe: string; partnerAction: string; enabled?: boolean; mapping?: unknown }
  return ((subs ?? presets) as ReadonlyArray<Sub>).map((s) => ({
    name: s.name ?? s.partnerAction,
    subscribe: s.subscribe,
    partnerAction: s.partnerAction,
    enabled: s.enabled ?? true,
    mapping: s.mapping ?? (isActionKey(s.partnerAction) ? defaultMapping(actions[s.partnerAction].fields) : {})
  }))
}

const instances: Array<{ analytics: Analytics; injector: FixtureInjector; plain: ReturnType<typeof plainRecorder> }> =
  []

const harness = {
  /** Loads a new Analytics.js instance with the destination; resolves once Analytics.js is loaded (the SDK may still be loading). */
  async start(options: StartOptions): Promise<number> {
    const injector = new FixtureInjector()
    const plain = plainRecorder()
    const [analytics] = await AnalyticsBrowser.load(
      {
        writeKey: 'test-write-key',
        cdnSettings: {
          integrations: { 'Segment.io': { apiKey: 'test-write-key' } },
          remotePlugins: [
            {
              name: destination.name,
              creationName: destination.name,
              libraryName: '1flowDestination',
              url: 'https://cdn.segment.com/next-integrations/actions/1flow/unused.js',
              settings: { ...options.settings, subscriptions: subscriptionsFor(options.subscriptions) }
            }
          ],
          metrics: { sampleRate: 0 }
        } as never,
        plugins: [oneFlowDestination, injector.plugin as never, plain.plugin as never]
      },
      { integrations: { 'Segment.io': false }, disableClientPersistence: options.persist !== true }
    )
    instances.push({ analytics, injector, plain })
    return instances.length - 1
  },

  /** Sends a fixture event (JSON, with $date/$repeat markers) and waits until every destination has it. */
  async send(id: number, eventJson: string): Promise<void> {
    const { analytics, injector } = instances[id]!
    await injector.send(analytics as never, reviveFixtureJson(eventJson) as Record<string, unknown>)
  },

  /** Sends without waiting for destinations (a destination still loading would hold the promise). */
  fire(id: number, eventJson: string): void {
    const { analytics, injector } = instances[id]!
    void injector.send(analytics as never, reviveFixtureJson(eventJson) as Record<string, unknown>)
  },

  state(id: number) {
    const { analytics, plain } = instances[id]!
    return {
      ...recordedState(logs, plain),
      failedInitializations: [
        ...((analytics as unknown as { queue: { failedInitializations: string[] } }).queue.failedInitializations ?? [])
      ],
      registered: (
        analytics as unknown as { queue: { plugins: Array<{ name: string; isLoaded(): boolean }> } }
      ).queue.plugins.map((p) => `${p.name}:${p.isLoaded()}`)
    }
  },

  /** Calls Analytics.js's own API (identify, track, reset) as a site does, and waits for it. */
  async call(id: number, method: 'identify' | 'track' | 'reset', args: unknown[]): Promise<void> {
    const analytics = instances[id]!.analytics as unknown as Record<string, (...a: unknown[]) => unknown>
    await analytics[method]!(...args)
  },

  /** Forgets what was recorded so far (the SDK stays loaded). */
  reset(): void {
    resetRecorded(logs)
  }
}

;(window as unknown as { harness: typeof harness }).harness = harness
export type Harness = typeof harness
