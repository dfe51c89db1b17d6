import type { Analytics, Context } from '@segment/analytics-next'
import { PreReadyBuffer, type Command, type SdkClient } from '@oneflow-seg/core'

/** What device-mode actions call: the SDK, plus the event's context (its messageId puts a backlog back in order; drops are logged on it). */
export interface DeviceClient {
  send(cmd: Command, context: Context): void
}

/**
 * Keeps event order across actions. The browser runtime makes one Analytics.js plugin per action, and each
 * waits for the SDK on its own, so events sent before the SDK loads would otherwise reach it grouped by
 * action (every identify, then every track). Dispatch order is noted from Analytics.js's `dispatch_start`
 * until the SDK is ready; the backlog released in that moment is sorted back into it and sent one task
 * later. From then on every call goes straight through, synchronously.
 */
export function watchDispatchOrder(
  analytics: Analytics,
  bufferLimit: number
): { ready(sdk: SdkClient): DeviceClient; stop(): void } {
  const order = new Map<unknown, number>()
  const onDispatch = (ctx: Context) => {
    const id = ctx?.event?.messageId
    if (!order.has(id)) order.set(id, order.size)
  }
  const stop = () => analytics.off('dispatch_start', onDispatch)
  analytics.on('dispatch_start', onDispatch)
  return {
    stop,
    ready(sdk) {
      let backlog: PreReadyBuffer<{ cmd: Command; context: Context }> | undefined = new PreReadyBuffer(
        bufferLimit,
        ({ context }) =>
          context.log('warn', `1Flow: not sent, ${bufferLimit} events already wait for its SDK (see bufferLimit).`)
      )
      setTimeout(() => {
        stop()
        const waiting = backlog
        backlog = undefined
        order.clear()
        waiting?.flush(
          ({ cmd }) => sdk.send(cmd),
          ({ context }, error) => context.log('error', `1Flow: the SDK threw: ${(error as Error).message}`)
        )
      }, 0)
      return {
        send(cmd, context) {
          if (backlog) backlog.push({ cmd, context }, order.get(context.event.messageId) ?? Number.MAX_SAFE_INTEGER)
          else sdk.send(cmd)
        }
      }
    }
  }
}
