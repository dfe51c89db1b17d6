import type { Command } from './commands.js'
import type { JsonObject } from './json-value.js'

/** A call on 1Flow's web SDK in its documented method form: `_1flow.logUser(id, traits)` / `_1flow.logEvent(name, params)`. */
export type SdkCall = readonly ['logUser', string, JsonObject] | readonly ['logEvent', string, JsonObject]

/** The web-SDK call a command becomes. Properties are passed flat (Segment's reference nests them one level down). */
export function toSdkCall(cmd: Command): SdkCall {
  return cmd.kind === 'identify' ? ['logUser', cmd.userId, cmd.traits] : ['logEvent', cmd.event, cmd.properties]
}
