import type { BrowserActionDefinition } from '@segment/browser-destination-runtime/types'
import { trackPage as definition, type TrackPagePayload, type Settings } from '@oneflow-seg/core'
import type { DeviceClient } from '../ordered-client'
import { performAction } from '../perform'

const action: BrowserActionDefinition<Settings, DeviceClient, TrackPagePayload> = {
  ...definition,
  platform: 'web',
  perform: (client, { payload, context }) => performAction('trackPage', client, payload, context)
}

export default action
