import { toSdkClient, type SdkClient } from '../index'

/** An SdkClient over an object-shaped SDK that records each call as `[method, ...args]`. */
export function recordingClient(): { client: SdkClient; calls: unknown[][] } {
  const calls: unknown[][] = []
  const client = toSdkClient({
    logUser: (...args: unknown[]) => calls.push(['logUser', ...args]),
    logEvent: (...args: unknown[]) => calls.push(['logEvent', ...args])
  }) as SdkClient
  return { client, calls }
}
