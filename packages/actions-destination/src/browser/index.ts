import { browserDestination } from '@segment/browser-destination-runtime/shim'
import type { BrowserDestinationDefinition } from '@segment/browser-destination-runtime/types'
import {
  DESTINATION_NAMES,
  loadOneFlowSdk,
  presets,
  resolveSdkSettings,
  settings,
  type Settings
} from '@oneflow-seg/core'
import identifyUser from './identifyUser'
import trackEvent from './trackEvent'
import trackPage from './trackPage'
import { watchDispatchOrder, type DeviceClient } from './ordered-client'

/**
 * "1Flow Web (Actions)": Segment loads 1Flow's web SDK and calls it. Unlike Segment's reference
 * implementation it waits for the real SDK (with a 10 s deadline, then fails so Analytics.js drops it),
 * never polls with timers, keeps event order, skips identify without a User ID and passes properties flat.
 */
export const destination: BrowserDestinationDefinition<Settings, DeviceClient> = {
  name: DESTINATION_NAMES.web,
  slug: 'actions-1flow',
  mode: 'device',
  description: 'Send identify and track calls to 1Flow, the in-app survey and messaging platform, through its web SDK.',
  settings,
  presets: presets.map((preset) => ({ ...preset })),
  async initialize({ settings: raw, analytics }, { loadScript }) {
    const order = watchDispatchOrder(analytics)
    try {
      return order.ready(
        await loadOneFlowSdk(resolveSdkSettings(raw), {
          loadScript,
          readGlobal: () => (window as { _1flow?: unknown })._1flow,
          setTimeout,
          clearTimeout
        })
      )
    } catch (error) {
      order.stop()
      throw error
    }
  },
  actions: { identifyUser, trackEvent, trackPage }
}

export default browserDestination(destination)
