/**
 * What Analytics.js knows of the user when a browser adapter starts, read before any event of the page can change
 * it (given to 1Flow's SDK once it is ready, by followUser). A module of its own, with no imports: the plugin reads
 * it on an app's start-up path, where every byte counts.
 */
/**
 * The user Analytics.js knew when an adapter started, as it stores it: its id and traits (read by `userAtStart`).
 * A pair, not an object: the plugin writes it out on an app's start-up path, where a pair is a few bytes shorter.
 */
export type UserAtStart = readonly [id: unknown, traits: unknown]

/**
 * What Analytics.js knows of the user now: taken when the adapter starts (its load), before any event of the page
 * can change it. Anything that is not an Analytics.js instance (a harness, an older caller) knows nobody.
 */
export function userAtStart(analytics: unknown): UserAtStart | undefined {
  if (typeof (analytics as { user?: unknown } | undefined)?.user !== 'function') return undefined
  const user = (analytics as { user(): { id(): unknown; traits(): unknown } }).user()
  return [user.id(), user.traits()]
}
