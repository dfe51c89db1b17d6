import type { Context, Plugin } from '@segment/analytics-next'
import {
  DESTINATION_NAMES,
  loadOneFlowSdk,
  mapWithPresets,
  resolveSdkSettings,
  InvalidSettingsError,
  MAX_SUBSCRIPTIONS,
  type MappedResult,
  type SdkClient,
  type SegmentEvent,
  type Subscription
} from '@oneflow-seg/core'
import { VERSION } from './version'

export interface OneFlowPluginOptions {
  /** Your 1Flow project API key (1Flow → Settings → Project Settings). */
  readonly projectApiKey: string
  /**
   * Segment-style subscriptions (`{name, subscribe, partnerAction, mapping}`), at most 50. Omit them to
   * use the presets (track → Track Event, identify → Identify User). Custom mappings load Segment's
   * mapping-kit and FQL parser on demand, in a separate chunk.
   */
  readonly mappings?: readonly Subscription[]
  /** Where to load 1Flow's web SDK from (default https://1flow.app/js/1flow.js). */
  readonly sdkUrl?: string
  /** Give up on the SDK after this long (default 10,000 ms); events for 1Flow are then dropped. */
  readonly loadTimeoutMs?: number
  /** Events kept while the SDK loads (default 100); further events are dropped with a logged reason. */
  readonly bufferLimit?: number
}

/** The plugin's name, which is also the name `integrations` options address it by. */
export const PLUGIN_NAME = DESTINATION_NAMES.plugin

type State = 'idle' | 'loading' | 'ready' | 'failed'

function positiveInteger(value: number | undefined, key: string, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || value <= 0)
    throw new InvalidSettingsError(key, `Option "${key}" must be a positive whole number.`)
  return value
}

function loadScript(src: string, attributes: Record<string, string>): Promise<unknown> {
  return new Promise((resolve, reject) => {
    // An SDK script already on the page (another instance, a reload of the plugin) is never injected twice.
    for (const existing of Array.from(document.scripts)) if (existing.src === src) return resolve(existing)
    const script = document.createElement('script')
    script.async = true
    script.src = src
    for (const [name, value] of Object.entries(attributes)) script.setAttribute(name, value)
    script.onload = resolve
    script.onerror = reject
    document.head.appendChild(script)
  })
}

/**
 * An Analytics.js destination plugin for 1Flow. Events sent before 1Flow's SDK is ready are kept (up to
 * `bufferLimit`) and delivered in the order they were sent; Analytics.js and other destinations never wait.
 */
export function oneFlow(options: OneFlowPluginOptions): Plugin {
  const settings = resolveSdkSettings(options)
  const bufferLimit = positiveInteger(options.bufferLimit, 'bufferLimit', 100)
  const timeoutMs = positiveInteger(options.loadTimeoutMs, 'loadTimeoutMs', 10_000)
  const mappings = options.mappings
  // The full check (triggers, actions, fields) runs in load(), with the mapping code; the count is cheap to check now.
  if (mappings !== undefined && (!Array.isArray(mappings) || mappings.length > MAX_SUBSCRIPTIONS)) {
    throw new InvalidSettingsError(
      'mappings',
      `Option "mappings" must be an array of at most ${MAX_SUBSCRIPTIONS} subscriptions${Array.isArray(mappings) ? ` (${mappings.length} mappings given)` : ''}.`
    )
  }

  let state: State = 'idle'
  let client: SdkClient | undefined
  let route: (event: SegmentEvent) => MappedResult[] = mapWithPresets
  let buffer: Context[] = []

  function deliver(ctx: Context): void {
    for (const { subscription, outcome } of route(ctx.event as SegmentEvent)) {
      if (outcome.kind === 'skip') ctx.log('debug', `1Flow: ${outcome.message}`)
      else if (outcome.kind === 'invalid')
        ctx.log('warn', `1Flow ${subscription ?? ''}: ${outcome.error.message} Not sent.`)
      else (client as SdkClient).send(outcome)
    }
  }

  function handle(ctx: Context): Context {
    if (state === 'ready') deliver(ctx)
    else if (state === 'failed') ctx.log('debug', '1Flow: not sent, its SDK did not load.')
    else if (buffer.length < bufferLimit) buffer.push(ctx)
    else ctx.log('warn', `1Flow: not sent, ${bufferLimit} events already wait for its SDK (see bufferLimit).`)
    return ctx
  }

  return {
    name: PLUGIN_NAME,
    type: 'destination',
    version: VERSION,
    isLoaded: () => state === 'ready',
    load() {
      if (state !== 'idle') return Promise.resolve()
      state = 'loading'
      const sdk = loadOneFlowSdk(
        settings,
        {
          loadScript,
          readGlobal: () => (window as { _1flow?: unknown })._1flow,
          setTimeout,
          clearTimeout: clearTimeout as (handle: unknown) => void
        },
        { timeoutMs }
      )
      // Custom mappings need Segment's mapping-kit and FQL parser: loaded only now, as a separate chunk.
      const router =
        mappings === undefined
          ? undefined
          : import('@oneflow-seg/core/mapping').then(({ compileSubscriptions, mapWithSubscriptions }) => {
              const compiled = compileSubscriptions(mappings)
              return (event: SegmentEvent) => mapWithSubscriptions(event, compiled)
            })
      return Promise.all([sdk, router]).then(
        ([sdkClient, customRoute]) => {
          client = sdkClient
          if (customRoute) route = customRoute
          state = 'ready'
          const waiting = buffer
          buffer = []
          for (const ctx of waiting) {
            try {
              deliver(ctx)
            } catch (error) {
              // One event the SDK chokes on must not cost the ones queued behind it.
              ctx.log('error', `1Flow: the SDK threw: ${(error as Error).message}`)
            }
          }
        },
        (error: Error) => {
          state = 'failed'
          if (buffer.length > 0) {
            console.warn(`1Flow: ${buffer.length} waiting events dropped. ${error.message}`)
            for (const ctx of buffer) ctx.log('warn', `1Flow: not sent. ${error.message}`)
          }
          buffer = []
          throw error
        }
      )
    },
    track: handle,
    identify: handle,
    page: handle,
    group: handle,
    alias: handle,
    screen: handle
  }
}
