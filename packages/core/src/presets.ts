import type { JSONObject } from '@segment/actions-core'
import { defaultMapping, type ActionKey } from './actions/registry.js'
import { identifyUserFields } from './actions/identify-user.js'
import { trackEventFields } from './actions/track-event.js'

export interface AutomaticPreset {
  readonly name: string
  readonly subscribe: string
  readonly partnerAction: ActionKey
  readonly mapping: JSONObject
  readonly type: 'automatic'
}

/** The presets Segment documents for 1Flow Web (Actions) (docs/segment-conventions.md): Track Event on `type = "track"`, Identify User on `type = "identify"`; mappings are the field defaults. */
export const presets = [
  {
    name: 'Track Event',
    subscribe: 'type = "track"',
    partnerAction: 'trackEvent',
    mapping: defaultMapping(trackEventFields),
    type: 'automatic'
  },
  {
    name: 'Identify User',
    subscribe: 'type = "identify"',
    partnerAction: 'identifyUser',
    mapping: defaultMapping(identifyUserFields),
    type: 'automatic'
  }
] as const satisfies readonly AutomaticPreset[]
