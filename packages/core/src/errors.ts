/** What a caller should do about an error. */
export type Remedy =
  /** Try the same thing again later; nothing is wrong with the input. */
  | 'retry'
  /** Correct the configuration (settings, subscriptions, mappings); retrying unchanged will fail again. */
  | 'fix-config'
  /** The event cannot be sent as it is; keep it for inspection (dead letter), do not retry unchanged. */
  | 'fix-payload'

/** Base of every error core throws: a stable `code`, a `remedy`, and a message meant for a human. */
export abstract class OneFlowError extends Error {
  abstract readonly code: string
  abstract readonly remedy: Remedy
}

/** A setting is missing or malformed. `key` names it; the message never contains its value. */
export class InvalidSettingsError extends OneFlowError {
  override readonly name = 'InvalidSettingsError'
  readonly code = 'INVALID_SETTINGS'
  readonly remedy = 'fix-config'
  constructor(
    readonly key: string,
    message: string
  ) {
    super(message)
  }
}

/**
 * Code an adapter fetches on demand (a chunk an app's bundler split out, such as the Analytics.js plugin's
 * delivery code) did not load: the page could not fetch it, or a newer deploy removed it.
 */
export class ChunkLoadError extends OneFlowError {
  override readonly name = 'ChunkLoadError'
  readonly code = 'CHUNK_LOAD_FAILED'
  readonly remedy = 'retry'
  constructor(
    readonly what: string,
    reason: string
  ) {
    super(`1Flow: ${what} did not load (${reason}); can the page fetch the app's script chunks?`)
  }
}
