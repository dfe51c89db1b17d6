import type { BrowserActionDefinition } from '@segment/browser-destination-runtime/types'
import { actions, type ActionKey, type PayloadOf, type DeviceSettings } from '@oneflow-seg/core'
import type { DeviceClient } from './ordered-client'
import { performAction } from './perform'

/** A device-mode action: core's definition (title, fields, default trigger) plus a `perform` that calls the SDK. */
export function browserAction<K extends ActionKey>(
  key: K
): BrowserActionDefinition<DeviceSettings, DeviceClient, PayloadOf<(typeof actions)[K]['fields']>> {
  return {
    ...actions[key],
    platform: 'web',
    perform: (client, { payload, context }) => performAction(key, client, payload, context)
  }
}
