/** The error for unusable subscriptions; its own module so that only the code checking subscriptions carries it. */
import { OneFlowError } from './errors.js'

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
