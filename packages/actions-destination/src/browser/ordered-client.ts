import type { Analytics, Context } from '@segment/analytics-next'
import type { Command, SdkClient } from '@oneflow-seg/core'

/** What device-mode actions call: the SDK, plus the event's messageId so that a backlog can be put back in order. */
export interface DeviceClient {
  send(cmd: Command, messageId: unknown): void
}

/**
 * Keeps event order across actions. The browser runtime makes one Analytics.js plugin per action, and each
 * waits for the SDK on its own, so events sent before the SDK loads would otherwise reach it grouped by
 * action (every identify, then every track). Dispatch order is noted from Analytics.js's `dispatch_start`
 * until the SDK is ready; the backlog released in that moment is sorted back into it and sent one task
 * later. From then on every call goes straight through, synchronously.
 */
export function watchDispatchOrder(analytics: Analytics): { ready(sdk: SdkClient): DeviceClient; stop(): void } {
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
      let backlog: Array<{ cmd: Command; rank: number }> | undefined = []
      setTimeout(() => {
        stop()
        const waiting = (backlog ?? []).sort((a, b) => a.rank - b.rank)
        backlog = undefined
        order.clear()
        for (const { cmd } of waiting) sdk.send(cmd)
      }, 0)
      return {
        send(cmd, messageId) {
          if (backlog) backlog.push({ cmd, rank: order.get(messageId) ?? Number.MAX_SAFE_INTEGER })
          else sdk.send(cmd)
        }
      }
    }
  }
}
