import type { Analytics, Context, Plugin } from '@segment/analytics-next'
import {
  createScriptLoader,
  PLUGIN_NAME as NAME,
  PreReadyBuffer,
  resolveSdkSettings,
  ChunkLoadError,
  type Subscription,
  type UserAtStart
} from '@oneflow-seg/core/browser-start'
import type { Deliver } from './delivery'
import { VERSION } from './version'

export interface OneFlowPluginOptions {
  /** Your 1Flow project API key (1Flow → Settings → Project Settings). */
  readonly projectApiKey: string
  /**
   * Segment-style subscriptions (`{name, subscribe, partnerAction, mapping}`), at most 50. Omit them to
   * use the presets (track → Track Event, identify → Identify User). Custom mappings load Segment's
   * mapping-kit and FQL parser on demand, in a separate chunk, and are checked there: a mapping that is refused
   * fails the plugin's load with an error naming it.
   */
  readonly mappings?: readonly Subscription[]
  /** Where to load 1Flow's web SDK from (default https://1flow.app/js/1flow.js). */
  readonly sdkUrl?: string
  /** Give up on the SDK after this long (default 10,000 ms, 1,000 to 60,000); events for 1Flow are then dropped. */
  readonly loadTimeoutMs?: number
  /** Events kept while the SDK loads (default 100, 1 to 10,000); further events are dropped with a logged reason. */
  readonly bufferLimit?: number
  /**
   * Consent categories 1Flow needs (ids in `context.consent.categoryPreferences`). Events that do not grant them
   * are not sent, and 1Flow's SDK is not loaded until an event that may be sent arrives.
   */
  readonly consentCategories?: readonly string[]
}

/** The plugin's name, which is also the name `integrations` options address it by. */
export const PLUGIN_NAME = NAME

type State = 'idle' | 'loading' | 'ready' | 'failed'

/**
 * An Analytics.js destination plugin for 1Flow. Events sent before 1Flow's SDK is ready are kept (up to
 * `bufferLimit`) and delivered in the order they were sent; Analytics.js and other destinations never wait.
 */
export function oneFlow(options: OneFlowPluginOptions): Plugin {
  const settings = resolveSdkSettings(options)
  const mappings = options.mappings
  const sdkAttributes = { 'data-api-key': settings.projectApiKey }
  let state: State = 'idle'
  let deliver: Deliver | undefined
  let failure = ''
  const buffer = new PreReadyBuffer<Context>(settings.bufferLimit, (ctx, reason) =>
    ctx.log(
      'warn',
      reason === 'buffer-full'
        ? `1Flow: not sent, ${settings.bufferLimit} events already wait for its SDK (bufferLimit).`
        : `1Flow: not sent. ${failure}`
    )
  )

  let analytics: Analytics
  /** The user Analytics.js knew when the plugin loaded, given to the SDK before any event (when still known then). */
  let atStart: UserAtStart | undefined
  /** Settles when the SDK is ready (or could not be made so): what load() answers Analytics.js, which reports a failure. */
  let settle: [(value: void) => void, (error: Error) => void]
  const loaded = new Promise<void>((resolve, reject) => (settle = [resolve, reject]))

  function handle(ctx: Context): Context {
    if (state === 'ready') (deliver as Deliver)(ctx)
    else if (state === 'failed') ctx.log('debug', `1Flow: not sent. ${failure}`)
    else buffer.push(ctx)
    return ctx
  }

  /** Fetches 1Flow's SDK beside the delivery chunk; the deadline counts from here. */
  function begin(): void {
    state = 'loading'
    const started = Date.now()
    // 1Flow's SDK script starts downloading now, beside the chunk with the code that delivers to it — unless
    // consent must come first: the delivery code then fetches it when an event that may be sent arrives. A page
    // that already has something at window._1flow is left to the loader, which uses a ready SDK as it is.
    const loadScript = createScriptLoader(document)
    const early =
      settings.consentCategories.length === 0 && (window as { _1flow?: unknown })._1flow == null
        ? loadScript(settings.sdkUrl, sdkAttributes)
        : undefined
    early?.catch(() => undefined) // the loader reports the failure
    import('./delivery')
      .catch((error: Error) => {
        throw new ChunkLoadError("the Analytics.js plugin's delivery code", error.message)
      })
      .then(({ startDelivery }) =>
        startDelivery(
          settings,
          mappings,
          early ? () => early : loadScript,
          Math.max(0, settings.loadTimeoutMs - (Date.now() - started)),
          analytics,
          atStart,
          buffer
        )
      )
      .then(
        (ready) => {
          deliver = ready
          state = 'ready'
          ready.flush()
          settle[0]()
        },
        (error: Error) => {
          state = 'failed'
          failure = error.message
          const dropped = buffer.dropAll('sdk-failed')
          if (dropped > 0) console.warn(`1Flow: ${dropped} waiting events dropped. ${error.message}`)
          settle[1](error)
        }
      )
  }

  return {
    name: PLUGIN_NAME,
    type: 'destination',
    version: VERSION,
    isLoaded: () => state === 'ready',
    load(_ctx, instance) {
      if (state === 'idle') {
        analytics = instance
        // (core's userAtStart, written out: this runs on the app's start-up path, where every byte counts)
        // Analytics.js passes itself; anything else (a harness) knows no user.
        const user = instance.user?.()
        atStart = user && [user.id(), user.traits()]
        begin()
      }
      return loaded
    },
    track: handle,
    identify: handle,
    page: handle,
    group: handle,
    alias: handle,
    screen: handle
  }
}
