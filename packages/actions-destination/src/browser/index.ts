import { browserDestination } from '@segment/browser-destination-runtime/shim'
import type { BrowserDestinationDefinition } from '@segment/browser-destination-runtime/types'
import {
  browserSdkDeps,
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
 * implementation it waits for the real SDK (by the `loadTimeoutMs` setting, 10 s by default, then fails so
 * Analytics.js drops it), never polls with timers, keeps event order, skips identify without a User ID, hands
 * a track's User ID to the SDK before the event, and passes properties flat.
 */
export const destination: BrowserDestinationDefinition<Settings, DeviceClient> = {
  name: DESTINATION_NAMES.web,
  slug: 'actions-1flow',
  mode: 'device',
  description: 'Send identify and track calls to 1Flow, the in-app survey and messaging platform, through its web SDK.',
  settings,
  presets: presets.map((preset) => ({ ...preset })),
  async initialize({ settings: raw, analytics }, { loadScript }) {
    const sdkSettings = resolveSdkSettings(raw)
    const order = watchDispatchOrder(analytics, sdkSettings.bufferLimit)
    try {
      return order.ready(
        await loadOneFlowSdk(sdkSettings, browserSdkDeps(window, loadScript), { timeoutMs: sdkSettings.loadTimeoutMs })
      )
    } catch (error) {
      order.stop()
      throw error
    }
  },
  actions: { identifyUser, trackEvent, trackPage }
}

export default browserDestination(destination)
