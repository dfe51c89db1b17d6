import type { Context } from '@segment/analytics-next'
import { actions, DESTINATION_NAMES, finishRoutes, type ActionKey, type SegmentEvent } from '@oneflow-seg/core'
import type { DeviceClient } from './ordered-client'

/**
 * The body of every device-mode action: core's finishRoutes (as cloud mode calls it) validates the resolved
 * payload against the action's fields (the browser runtime does not), honours the `integrations` object under
 * device mode's name and builds the command; the command reaches the SDK synchronously. Whatever is not sent
 * is logged on the event's context with the reason.
 */
export function performAction(actionKey: ActionKey, client: DeviceClient, payload: unknown, context: Context): void {
  const event = context.event as SegmentEvent
  const [result] = finishRoutes(event, [{ subscription: actions[actionKey].title, actionKey, payload }], {
    integrationName: DESTINATION_NAMES.web,
    consentCategories: client.consentCategories
  })
  const outcome = result!.outcome
  if (outcome.kind === 'invalid') context.log('warn', `1Flow ${actionKey}: ${outcome.error.message} Not sent.`)
  else if (outcome.kind === 'skip')
    context.log(
      outcome.reason === 'missing-user-id' || outcome.reason === 'no-consent' ? 'info' : 'debug',
      `1Flow: ${outcome.message}`
    )
  else client.send(outcome, context)
}
