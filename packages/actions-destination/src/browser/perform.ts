import type { Context } from '@segment/analytics-next'
import {
  DESTINATION_NAMES,
  eventTimestamp,
  InvalidPayloadError,
  isEnabledByIntegrations,
  toCommand,
  type ActionKey,
  type SegmentEvent
} from '@oneflow-seg/core'
import type { DeviceClient } from './ordered-client'

/**
 * The body of every device-mode action: validate the resolved payload against the action's fields (the
 * browser runtime does not), build the command with core, and hand it to the SDK synchronously. Whatever
 * is not sent is logged on the event's context with the reason.
 */
export function performAction(actionKey: ActionKey, client: DeviceClient, payload: unknown, context: Context): void {
  const event = context.event as SegmentEvent
  if (!isEnabledByIntegrations(event.integrations, DESTINATION_NAMES.web)) {
    context.log('debug', `1Flow: not sent, the event's integrations object turns "${DESTINATION_NAMES.web}" off.`)
    return
  }
  let outcome
  try {
    outcome = toCommand(actionKey, payload, { timestamp: eventTimestamp(event) })
  } catch (error) {
    if (!(error instanceof InvalidPayloadError)) throw error
    context.log('warn', `1Flow ${actionKey}: ${error.message} Not sent.`)
    return
  }
  if (outcome.kind === 'skip') context.log('info', `1Flow: ${outcome.message}`)
  else client.send(outcome, context)
}
