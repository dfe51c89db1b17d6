import type { BrowserActionDefinition } from '@segment/browser-destination-runtime/types'
import { trackEvent as definition, type TrackEventPayload, type Settings } from '@oneflow-seg/core'
import type { DeviceClient } from '../ordered-client'
import { performAction } from '../perform'

const action: BrowserActionDefinition<Settings, DeviceClient, TrackEventPayload> = {
  ...definition,
  platform: 'web',
  perform: (client, { payload, context }) => performAction('trackEvent', client, payload, context)
}

export default action
