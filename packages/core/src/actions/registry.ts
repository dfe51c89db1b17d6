import type { InputField, JSONObject } from '@segment/actions-core'
import type { Command, CommandContext, Skip } from '../commands.js'
import { identifyUser, toIdentifyCommand } from './identify-user.js'
import { toTrackCommand, trackEvent } from './track-event.js'
import { toPageCommand, trackPage } from './track-page.js'
import { identifyGroup, toGroupCommand } from './identify-group.js'

/** Every 1Flow action, keyed as Segment's `partnerAction`. */
export const actions = { identifyUser, trackEvent, trackPage, identifyGroup } as const

export type ActionKey = keyof typeof actions

export const actionKeys = Object.keys(actions) as ActionKey[]

export function isActionKey(value: unknown): value is ActionKey {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(actions, value)
}

const builders: Record<ActionKey, (payload: unknown, context: CommandContext) => Command | Skip> = {
  identifyUser: toIdentifyCommand,
  trackEvent: toTrackCommand,
  trackPage: toPageCommand,
  identifyGroup: toGroupCommand
}

/** Turns a resolved payload of `actionKey` into a 1Flow command or a skip; throws InvalidPayloadError. */
export function toCommand(actionKey: ActionKey, payload: unknown, context: CommandContext = {}): Command | Skip {
  return builders[actionKey](payload, context)
}

/** A field list's defaults as a mapping (what a preset subscribes with). */
export function defaultMapping(fields: Record<string, InputField>): JSONObject {
  const mapping: JSONObject = {}
  for (const [key, field] of Object.entries(fields)) {
    if (field.default !== undefined) mapping[key] = field.default as JSONObject[string]
  }
  return mapping
}
