import type { InputField } from '@segment/actions-core'
import { defineFields, type PayloadOf } from '../field-types.js'
import { commandTimestamp, type CommandContext, type TrackCommand } from '../commands.js'
import { InvalidPayloadError } from '../payload-errors.js'
import { toId, toJsonFields } from '../json-value.js'
import { validatePayload } from '../payload.js'
import { identityFields } from './shared-fields.js'

export const trackEventFields = /* @__PURE__ */ defineFields({
  event_name: {
    label: 'Event Name',
    description: 'The name of the event.',
    type: 'string',
    required: true,
    default: { '@path': '$.event' }
  },
  userId: identityFields.userId,
  anonymousId: identityFields.anonymousId,
  properties: {
    label: 'Event Properties',
    description: 'Information associated with the event',
    type: 'object',
    default: { '@path': '$.properties' }
  }
})

export type TrackEventPayload = PayloadOf<typeof trackEventFields>

export const trackEvent = {
  title: 'Track Event',
  description: 'Submit an event to 1Flow.',
  defaultSubscription: 'type = "track"',
  fields: trackEventFields
} as const

/** Builds a track command from a payload of the track field shape (Track Event and Track Page View share it). */
export function buildTrackCommand(
  fields: Record<string, InputField>,
  payload: unknown,
  context: CommandContext
): TrackCommand {
  const p = validatePayload<TrackEventPayload>(fields, payload)
  if (p.event_name.trim() === '') {
    throw new InvalidPayloadError(
      'event_name',
      'missing',
      'Field "event_name" (Event Name) is blank; 1Flow needs an event name.'
    )
  }
  const cmd: { -readonly [K in keyof TrackCommand]: TrackCommand[K] } = {
    kind: 'track',
    event: p.event_name,
    properties: toJsonFields(p.properties, 'properties')
  }
  const userId = toId(p.userId)
  if (userId !== undefined) cmd.userId = userId
  const anonymousId = toId(p.anonymousId)
  if (anonymousId !== undefined) cmd.anonymousId = anonymousId
  const timestamp = commandTimestamp(context)
  if (timestamp !== undefined) cmd.timestamp = timestamp
  return cmd
}

/** track → `logEvent(event, properties)`; a missing or blank event name is an InvalidPayloadError on `event_name`. */
export function toTrackCommand(payload: unknown, context: CommandContext = {}): TrackCommand {
  return buildTrackCommand(trackEventFields, payload, context)
}
