/**
 * What the plugin needs once it is loaded — 1Flow's SDK loader and client, the presets' direct path, custom
 * mappings, the consent gate — in its own module, which `load()` imports: an app's bundler puts it in a chunk of
 * its own, fetched beside 1Flow's SDK script instead of on the app's start-up path. Nothing here runs before
 * `load()`.
 */
import type { Analytics, Context } from '@segment/analytics-next'
import {
  browserSdkDeps,
  followUser,
  loadOneFlowSdk,
  presetOutcome,
  type Command,
  type MappedResult,
  type PresetOutcome,
  type SdkClient,
  type SdkLoaderDeps,
  type SegmentEvent
} from '@oneflow-seg/core/browser'
import type { PreReadyBuffer, ResolvedSdkSettings, Subscription, UserAtStart } from '@oneflow-seg/core/browser-start'

/** Sends one event's outcome(s) to the SDK, or logs why not; `flush` hands it what waited in `buffer` meanwhile. */
export type Deliver = ((ctx: Context) => void) & { flush(): void }

/**
 * Resolves with the plugin's deliver function once 1Flow's SDK is callable (and custom mappings are compiled).
 * `loadScript` is the script loader (already started by the caller, or started now); `timeoutMs` is what is
 * left of the load deadline; `atStart` is the user Analytics.js knew when the plugin loaded; `buffer` holds the events that arrived before (the plugin's own).
 *
 * With consent categories it resolves at once: the SDK is fetched by the first event that has something to send
 * (events whose consent preferences do not grant the categories are skipped by the mapping first), its deadline
 * counting from then; such events wait in `buffer` until it is ready.
 */
export function startDelivery(
  settings: ResolvedSdkSettings,
  mappings: readonly Subscription[] | undefined,
  loadScript: SdkLoaderDeps['loadScript'],
  timeoutMs: number,
  analytics: Analytics,
  atStart: UserAtStart | undefined,
  buffer: PreReadyBuffer<Context>
): Promise<Deliver> {
  const { consentCategories } = settings
  const load = (deadline: number) =>
    loadOneFlowSdk(settings, browserSdkDeps(window, loadScript), { timeoutMs: deadline }).then((client) => {
      // The user Analytics.js already knows goes to the SDK before any event; a reset makes the client forget it.
      followUser(analytics, client, atStart)
      return client
    })
  const gated = consentCategories.length > 0
  // Custom mappings need Segment's mapping-kit and FQL parser: loaded only now, as a separate chunk.
  const router =
    mappings === undefined
      ? undefined
      : import('@oneflow-seg/core/mapping').then(({ compileSubscriptions, mapWithSubscriptions }) => {
          const compiled = compileSubscriptions(mappings)
          return (event: SegmentEvent): MappedResult[] => mapWithSubscriptions(event, compiled, { consentCategories })
        })
  return Promise.all([gated ? undefined : load(timeoutMs), router]).then(([loaded, route]) => {
    let client: SdkClient | undefined = loaded
    let failure: string | undefined
    let loading = false
    const outcomes = (ctx: Context): Array<{ outcome: PresetOutcome; subscription?: string }> =>
      route === undefined
        ? [{ outcome: presetOutcome(ctx.event as SegmentEvent, undefined, consentCategories) }]
        : route(ctx.event as SegmentEvent)
    const sdkThrew = (ctx: Context, error: unknown) =>
      ctx.log('error', `1Flow: the SDK threw: ${(error as Error).message}`)
    const deliver = (ctx: Context): void => {
      const commands: Command[] = []
      for (const { outcome, subscription = '' } of outcomes(ctx)) {
        if (outcome.kind === 'skip')
          ctx.log(
            outcome.reason === 'no-consent' || outcome.reason === 'missing-user-id' ? 'info' : 'debug',
            `1Flow: ${outcome.message}`
          )
        else if (outcome.kind === 'invalid')
          ctx.log('warn', `1Flow ${subscription}: ${outcome.error.message} Not sent.`)
        else commands.push(outcome)
      }
      if (commands.length === 0) return
      if (client) for (const cmd of commands) client.send(cmd)
      else if (failure !== undefined) ctx.log('warn', `1Flow: not sent. ${failure}`)
      else {
        // Consent is there and something is to be sent: now 1Flow's SDK is fetched, and the event waits for it.
        buffer.push(ctx)
        if (loading) return
        loading = true
        load(settings.loadTimeoutMs).then(
          (ready) => {
            client = ready
            buffer.flush(deliver, sdkThrew)
          },
          (error: Error) => {
            failure = error.message
            buffer.flush((waiting) => waiting.log('warn', `1Flow: not sent. ${failure}`), sdkThrew)
          }
        )
      }
    }
    // One event the SDK chokes on must not cost the ones queued behind it.
    return Object.assign(deliver, { flush: () => buffer.flush(deliver, sdkThrew) })
  })
}
