/**
 * The user Analytics.js knows, followed by the SDK: at load, the user it already knows from an earlier page is
 * given to 1Flow's SDK with the traits it keeps (before any event), and `analytics.reset()` makes the SDK client
 * forget the user it gave last. Takes the Analytics.js instance as a parameter: core reads no global.
 */
import { toId, toJsonObject, type JsonObject } from './json-value.js'
import type { SdkClient } from './sdk-client.js'

/** The parts of an Analytics.js instance this reads (structural, so core does not depend on analytics-next). */
export interface UserSource {
  user(): { id(): unknown; traits(): unknown }
  on(event: 'reset', listener: () => void): unknown
}

/** Gives `sdk` the user `analytics` already knows (once, now) and forgets it on every `analytics.reset()`. */
export function followUser(analytics: UserSource, sdk: SdkClient): void {
  // Analytics.js passes itself to a plugin's load(); anything else (a harness, an older caller) has no user to give.
  if (typeof analytics?.user !== 'function') return
  const user = analytics.user()
  const userId = toId(user.id())
  if (userId !== undefined) {
    let traits: JsonObject = {}
    try {
      traits = toJsonObject(user.traits(), 'traits')
    } catch {
      // Stored traits that are not plain data (circular, nested too deep) are left out; the user still counts.
    }
    sdk.knownUser(userId, traits)
  }
  analytics.on('reset', () => sdk.forget())
}
