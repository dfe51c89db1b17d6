/**
 * The user Analytics.js knows, followed by the SDK. The user it knows when the adapter starts (from an earlier
 * page) is given to 1Flow's SDK once it is ready, with the traits kept for it, before any event — unless that
 * user is gone by then (a reset, or another user identified meanwhile: that event gives its own user). And
 * `analytics.reset()` makes the SDK client forget the user it gave last. Takes the Analytics.js instance as a
 * parameter: core reads no global.
 */
import { toId, toJsonObject, type JsonObject } from './json-value.js'
import type { SdkClient } from './sdk-client.js'
import type { UserAtStart } from './user-at-start.js'

/** The parts of an Analytics.js instance this reads (structural, so core does not depend on analytics-next). */
export interface UserSource {
  user(): { id(): unknown; traits(): unknown }
  on(event: 'reset', listener: () => void): unknown
}

/**
 * Gives `sdk` the user known at start when Analytics.js still knows that user, and forgets the user given last on
 * every `analytics.reset()`.
 */
export function followUser(analytics: unknown, sdk: SdkClient, atStart: UserAtStart | undefined): void {
  if (typeof (analytics as Partial<UserSource> | undefined)?.user !== 'function') return
  const source = analytics as UserSource
  const userId = toId(atStart?.[0])
  if (userId !== undefined && toId(source.user().id()) === userId) {
    let traits: JsonObject = {}
    try {
      traits = toJsonObject(atStart?.[1], 'traits')
    } catch {
      // Stored traits that are not plain data (circular, nested too deep) are left out; the user still counts.
    }
    sdk.knownUser(userId, traits)
  }
  source.on('reset', () => sdk.forget())
}
