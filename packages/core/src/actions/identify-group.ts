import { defineFields, type PayloadOf } from '../field-types.js'
import { skip, commandTimestamp, type CommandContext, type IdentifyCommand, type Skip } from '../commands.js'
import { InvalidPayloadError } from '../payload-errors.js'
import { toId, toJsonObject, type JsonObject } from '../json-value.js'
import { validatePayload } from '../payload.js'
import { identityFields } from './shared-fields.js'

/** What Identify Group puts before each group attribute on the user, unless its mapping says otherwise. */
export const GROUP_ATTRIBUTE_PREFIX = 'company_'

export const identifyGroupFields = /* @__PURE__ */ defineFields({
  userId: identityFields.userId,
  groupId: {
    label: 'Group ID',
    description: "The group's (account's, company's) id, set on the user as <prefix>id.",
    type: 'string',
    required: true,
    default: { '@path': '$.groupId' }
  },
  traits: {
    label: 'Group Traits',
    description: "The group's traits, set on the user as <prefix><trait> (its name as <prefix>name).",
    type: 'object',
    defaultObjectUI: 'keyvalue',
    default: { '@path': '$.traits' }
  },
  prefix: {
    label: 'Attribute Prefix',
    description: `What goes before each group attribute on the user (default ${GROUP_ATTRIBUTE_PREFIX}).`,
    type: 'string',
    default: GROUP_ATTRIBUTE_PREFIX
  }
})

export type IdentifyGroupPayload = PayloadOf<typeof identifyGroupFields>

export const identifyGroup = {
  title: 'Identify Group',
  description:
    "Set a user's group (account, company) and its traits as attributes of the user in 1Flow, so surveys can target by plan or account.",
  defaultSubscription: 'type = "group"',
  fields: identifyGroupFields
} as const

/**
 * group → the user's attributes in 1Flow (`logUser(userId, {company_id, company_name, company_<trait>…})`, HTTP
 * `POST /identify`): 1Flow has no group call, so the group's traits are merged into its user's, prefixed. Without
 * a usable User ID it is skipped: a group is attached to a user. The group id wins over a trait named `id`.
 */
export function toGroupCommand(payload: unknown, context: CommandContext = {}): IdentifyCommand | Skip {
  const p = validatePayload<IdentifyGroupPayload>(identifyGroupFields, payload)
  const userId = toId(p.userId)
  if (userId === undefined) {
    return skip(
      'missing-user-id',
      'Identify Group not sent: the event has no User ID; 1Flow attaches a group to a user.'
    )
  }
  const groupId = toId(p.groupId)
  if (groupId === undefined)
    throw new InvalidPayloadError('groupId', 'missing', 'Field "groupId" (Group ID) is blank; 1Flow needs a group id.')
  const prefix = p.prefix ?? GROUP_ATTRIBUTE_PREFIX
  const traits: JsonObject = {}
  for (const [key, value] of Object.entries(toJsonObject(p.traits, 'traits'))) traits[`${prefix}${key}`] = value
  traits[`${prefix}id`] = groupId
  const cmd: { -readonly [K in keyof IdentifyCommand]: IdentifyCommand[K] } = { kind: 'identify', userId, traits }
  const timestamp = commandTimestamp(context)
  if (timestamp !== undefined) cmd.timestamp = timestamp
  return cmd
}
