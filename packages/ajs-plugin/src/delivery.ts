/**
 * What the plugin needs once it is loaded — 1Flow's SDK loader and client, the presets' direct path, custom
 * mappings — in its own module, which `load()` imports: an app's bundler puts it in a chunk of its own, fetched
 * beside 1Flow's SDK script instead of on the app's start-up path. Nothing here runs before `load()`.
 */
import type { Context } from '@segment/analytics-next'
import {
  browserSdkDeps,
  loadOneFlowSdk,
  presetOutcome,
  type MappedResult,
  type PresetOutcome,
  type SdkClient,
  type SdkLoaderDeps,
  type SegmentEvent
} from '@oneflow-seg/core/browser'
import type { ResolvedSdkSettings, Subscription } from '@oneflow-seg/core/browser-start'

/** Sends one event's outcome(s) to the ready SDK, or logs why not. */
export type Deliver = (ctx: Context) => void

/**
 * Resolves with the plugin's deliver function once 1Flow's SDK is callable (and custom mappings are compiled).
 * `loadScript` is the script loader (already started by the caller, or started now); `timeoutMs` is what is
 * left of the load deadline.
 */
export function startDelivery(
  settings: ResolvedSdkSettings,
  mappings: readonly Subscription[] | undefined,
  loadScript: SdkLoaderDeps['loadScript'],
  timeoutMs: number
): Promise<Deliver> {
  const sdk = loadOneFlowSdk(settings, browserSdkDeps(window, loadScript), { timeoutMs })
  // Custom mappings need Segment's mapping-kit and FQL parser: loaded only now, as a separate chunk.
  const router =
    mappings === undefined
      ? undefined
      : import('@oneflow-seg/core/mapping').then(({ compileSubscriptions, mapWithSubscriptions }) => {
          const compiled = compileSubscriptions(mappings)
          return (event: SegmentEvent): MappedResult[] => mapWithSubscriptions(event, compiled)
        })
  return Promise.all([sdk, router]).then(([client, route]) => {
    const report = (ctx: Context, outcome: PresetOutcome, subscription = ''): void => {
      if (outcome.kind === 'skip') ctx.log('debug', `1Flow: ${outcome.message}`)
      else if (outcome.kind === 'invalid') ctx.log('warn', `1Flow ${subscription}: ${outcome.error.message} Not sent.`)
      else (client as SdkClient).send(outcome)
    }
    return route === undefined
      ? (ctx) => report(ctx, presetOutcome(ctx.event as SegmentEvent))
      : (ctx) => {
          for (const { subscription, outcome } of route(ctx.event as SegmentEvent)) report(ctx, outcome, subscription)
        }
  })
}
