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

export interface SubscriptionProblem {
  /** Index of the subscription in the list given, or -1 for a problem with the list itself. */
  readonly index: number
  /** Which part is wrong. */
  readonly part: 'list' | 'subscribe' | 'partnerAction' | 'mapping' | 'shape'
  readonly message: string
}

/** One or more subscriptions (mappings) are unusable; `problems` lists each with what to write instead. */
export class InvalidSubscriptionError extends OneFlowError {
  override readonly name = 'InvalidSubscriptionError'
  readonly code = 'INVALID_SUBSCRIPTION'
  readonly remedy = 'fix-config'
  constructor(readonly problems: readonly SubscriptionProblem[]) {
    super(
      problems.length === 1
        ? (problems[0] as SubscriptionProblem).message
        : `${problems.length} problems in subscriptions:\n${problems.map((p) => `- ${p.message}`).join('\n')}`
    )
  }
}

export type InvalidPayloadReason = 'missing' | 'type' | 'circular' | 'too-deep'

/** A mapped payload breaks a field's rules; `field` names the field. */
export class InvalidPayloadError extends OneFlowError {
  override readonly name = 'InvalidPayloadError'
  readonly code = 'INVALID_PAYLOAD'
  readonly remedy = 'fix-payload'
  constructor(
    readonly field: string,
    readonly reason: InvalidPayloadReason,
    message: string
  ) {
    super(message)
  }
}

/** A single 1Flow request would exceed 1Flow's size limit; it can never be delivered as it is. */
export class PayloadTooLargeError extends OneFlowError {
  override readonly name = 'PayloadTooLargeError'
  readonly code = 'PAYLOAD_TOO_LARGE'
  readonly remedy = 'fix-payload'
  constructor(
    readonly bytes: number,
    readonly limit: number
  ) {
    super(
      `The 1Flow request body is ${bytes} bytes; 1Flow accepts at most ${limit} bytes per event. Send fewer or smaller properties/traits.`
    )
  }
}

/** The 1Flow web SDK could not be loaded (404, blocked, CSP, or no answer before the deadline). */
export class SdkLoadError extends OneFlowError {
  override readonly name = 'SdkLoadError'
  readonly code = 'SDK_LOAD_FAILED'
  readonly remedy = 'fix-config'
  constructor(
    readonly url: string,
    readonly reason: string
  ) {
    super(
      `The 1Flow SDK at ${url} did not load (${reason}); check the URL and the page's Content-Security-Policy (script-src).`
    )
  }
}
