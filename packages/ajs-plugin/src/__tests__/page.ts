// The Analytics.js plugin test page: real analytics-next 1.84.3, `analytics.register(oneFlow(...))`,
// plus a plain destination and a fixture injector.
import { AnalyticsBrowser, Context, type Analytics, type Plugin } from '@segment/analytics-next'
import {
  FixtureInjector,
  plainRecorder,
  recordContextLogs,
  recordedState,
  resetRecorded,
  reviveFixtureJson
} from '@oneflow-seg/testkit/browser'
import { oneFlow, type OneFlowPluginOptions } from '../index'

const logs = recordContextLogs(Context as never)

interface Instance {
  analytics: Analytics
  injector: FixtureInjector
  plain: ReturnType<typeof plainRecorder>
  plugin?: Plugin
  /** Settles when the plugin's load settles (resolved or rejected). */
  loaded: Promise<void>
  error?: string
}
const instances: Instance[] = []

const harness = {
  /** Loads Analytics.js and registers the 1Flow plugin; a configuration error is reported, not thrown. */
  async start(options: OneFlowPluginOptions & { persist?: boolean }): Promise<number> {
    const { persist, ...pluginOptions } = options
    const injector = new FixtureInjector()
    const plain = plainRecorder()
    const [analytics] = await AnalyticsBrowser.load(
      {
        writeKey: 'test-write-key',
        cdnSettings: {
          integrations: { 'Segment.io': { apiKey: 'test-write-key' } },
          metrics: { sampleRate: 0 }
        } as never,
        plugins: [injector.plugin as never, plain.plugin as never]
      },
      { integrations: { 'Segment.io': false }, disableClientPersistence: persist !== true }
    )
    const instance: Instance = { analytics, injector, plain, loaded: Promise.resolve() }
    instances.push(instance)
    try {
      const plugin = oneFlow(pluginOptions)
      const load = plugin.load.bind(plugin)
      let settle: () => void = () => undefined
      instance.loaded = new Promise<void>((resolve) => (settle = resolve))
      plugin.load = (...args) =>
        load(...args).then(settle, (error: Error) => {
          instance.error = error.message
          settle()
          throw error
        })
      instance.plugin = plugin
      await analytics.register(plugin)
    } catch (error) {
      instance.error = (error as Error).message
    }
    return instances.length - 1
  },

  /** Sends a fixture event, then waits for the plugin's load to settle (so buffered events are delivered). */
  async send(id: number, eventJson: string): Promise<void> {
    const { analytics, injector, loaded } = instances[id]!
    await injector.send(analytics as never, reviveFixtureJson(eventJson) as Record<string, unknown>)
    await loaded
  },

  /** Sends without waiting for anything. */
  fire(id: number, eventJson: string): void {
    const { analytics, injector } = instances[id]!
    void injector.send(analytics as never, reviveFixtureJson(eventJson) as Record<string, unknown>)
  },

  state(id: number) {
    const { analytics, plain, plugin, error } = instances[id]!
    return {
      ...recordedState(logs, plain),
      error: error ?? null,
      loaded: plugin?.isLoaded() ?? false,
      registered: (analytics as unknown as { queue: { plugins: Array<{ name: string }> } }).queue.plugins.map(
        (p) => p.name
      )
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
