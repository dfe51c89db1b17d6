import { defineFields, type PayloadOf } from '../field-types.js'
import { skip, commandTimestamp, type CommandContext, type IdentifyCommand, type Skip } from '../commands.js'
import { toJsonObject } from '../json-value.js'
import { validatePayload } from '../payload.js'
import { identityFields } from './shared-fields.js'

export const identifyUserFields = /* @__PURE__ */ defineFields({
  userId: identityFields.userId,
  traits: {
    label: 'Custom Attributes',
    description: "The user's custom attributes.",
    type: 'object',
    defaultObjectUI: 'keyvalue',
    default: { '@path': '$.traits' }
  }
})

export type IdentifyUserPayload = PayloadOf<typeof identifyUserFields>

export const identifyUser = {
  title: 'Identify User',
  description: 'Create or update a user in 1Flow.',
  defaultSubscription: 'type = "identify"',
  fields: identifyUserFields
} as const

/** identify → `logUser(userId, traits)`; without a usable User ID the call is skipped, as Segment's documentation of the destination says (docs/segment-conventions.md). */
export function toIdentifyCommand(payload: unknown, context: CommandContext = {}): IdentifyCommand | Skip {
  const p = validatePayload<IdentifyUserPayload>(identifyUserFields, payload)
  if (p.userId === undefined || p.userId.trim() === '') {
    return skip('missing-user-id', 'Identify User not sent: the event has no User ID.')
  }
  const cmd: { -readonly [K in keyof IdentifyCommand]: IdentifyCommand[K] } = {
    kind: 'identify',
    userId: p.userId,
    // An object, never null, whatever a custom mapping resolves to (null gives {}).
    traits: toJsonObject(p.traits, 'traits')
  }
  const timestamp = commandTimestamp(context)
  if (timestamp !== undefined) cmd.timestamp = timestamp
  return cmd
}
