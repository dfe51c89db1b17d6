import type { Analytics, Context } from '@segment/analytics-next'
import { PreReadyBuffer, type Command, type SdkClient } from '@oneflow-seg/core'

/** What device-mode actions call: the SDK, plus the event's context (its messageId puts a backlog back in order; drops are logged on it). */
export interface DeviceClient {
  send(cmd: Command, context: Context): void
  /** The consent categories an event must grant (the consentCategories setting), for perform's check. */
  readonly consentCategories: readonly string[]
}

/**
 * Keeps event order across actions. The browser runtime makes one Analytics.js plugin per action, and each
 * waits for the SDK on its own, so events sent before the SDK loads would otherwise reach it grouped by
 * action (every identify, then every track). Dispatch order is noted from Analytics.js's `dispatch_start`
 * until the SDK is ready; the backlog released in that moment is sorted back into it and sent one task
 * later. From then on every call goes straight through, synchronously.
 *
 * Given a loader instead of a loaded SDK (consent categories: initialize returns at once), the SDK is loaded by
 * the first command that reaches the client — perform has already skipped events without consent — and
 * commands wait in arrival order until it is ready; if it does not load, they are dropped with the reason.
 */
export function watchDispatchOrder(
  analytics: Analytics,
  bufferLimit: number
): {
  ready(source: SdkClient | (() => Promise<SdkClient>), consentCategories?: readonly string[]): DeviceClient
  stop(): void
} {
  const order = new Map<unknown, number>()
  const onDispatch = (ctx: Context) => {
    const id = ctx?.event?.messageId
    if (!order.has(id)) order.set(id, order.size)
  }
  const stop = () => {
    analytics.off('dispatch_start', onDispatch)
    order.clear()
  }
  analytics.on('dispatch_start', onDispatch)
  return {
    stop,
    ready(source, consentCategories = []) {
      const lazy = typeof source === 'function'
      let sdk = lazy ? undefined : source
      let failure = ''
      let loading = false
      /** Commands wait here until the SDK is ready (or failed); afterwards every call goes straight through. */
      let waiting = true
      const backlog = new PreReadyBuffer<{ cmd: Command; context: Context }>(bufferLimit, ({ context }, reason) =>
        context.log(
          'warn',
          reason === 'buffer-full'
            ? `1Flow: not sent, ${bufferLimit} events already wait for its SDK (see bufferLimit).`
            : `1Flow: not sent. ${failure}`
        )
      )
      const release = (ready: SdkClient) => {
        stop()
        sdk = ready
        waiting = false
        backlog.flush(
          ({ cmd }) => ready.send(cmd),
          ({ context }, error) => context.log('error', `1Flow: the SDK threw: ${(error as Error).message}`)
        )
      }
      if (sdk) setTimeout(() => release(sdk as SdkClient), 0)
      // Ready at once, so events reach the actions in dispatch order: no order to restore, nothing to note.
      else stop()
      return {
        consentCategories,
        send(cmd, context) {
          if (!waiting) {
            if (sdk) sdk.send(cmd)
            else context.log('warn', `1Flow: not sent. ${failure}`)
            return
          }
          backlog.push({ cmd, context }, order.get(context.event.messageId) ?? Number.MAX_SAFE_INTEGER)
          if (lazy && !loading) {
            loading = true
            ;(source as () => Promise<SdkClient>)().then(release, (error: Error) => {
              failure = error.message
              waiting = false
              backlog.dropAll('sdk-failed')
            })
          }
        }
      }
    }
  }
}
