/** The errors for events that cannot be sent as they are; their own module so that start-up code does not carry them. */
import { OneFlowError } from './errors.js'

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
