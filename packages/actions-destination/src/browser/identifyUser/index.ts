import type { BrowserActionDefinition } from '@segment/browser-destination-runtime/types'
import { identifyUser as definition, type IdentifyUserPayload, type Settings } from '@oneflow-seg/core'
import type { DeviceClient } from '../ordered-client'
import { performAction } from '../perform'

const action: BrowserActionDefinition<Settings, DeviceClient, IdentifyUserPayload> = {
  ...definition,
  platform: 'web',
  perform: (client, { payload, context }) => performAction('identifyUser', client, payload, context)
}

export default action
