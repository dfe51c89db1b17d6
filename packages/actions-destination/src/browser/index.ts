import { browserDestination } from '@segment/browser-destination-runtime/shim'
import type { BrowserDestinationDefinition } from '@segment/browser-destination-runtime/types'
import {
  browserSdkDeps,
  deviceSettings,
  DESTINATION_NAMES,
  followUser,
  loadOneFlowSdk,
  presets,
  resolveSdkSettings,
  type DeviceSettings,
  userAtStart,
  type SdkClient
} from '@oneflow-seg/core'
import identifyGroup from './identifyGroup'
import identifyUser from './identifyUser'
import trackEvent from './trackEvent'
import trackPage from './trackPage'
import { watchDispatchOrder, type DeviceClient } from './ordered-client'

/**
 * "1Flow Web (Actions)": Segment loads 1Flow's web SDK and calls it. Unlike Segment's reference
 * implementation it waits for the real SDK (by the `loadTimeoutMs` setting, 10 s by default, then fails so
 * Analytics.js drops it), never polls with timers, keeps event order, skips identify without a User ID, gives
 * the SDK the user Analytics.js already knows and each event's own user first, and passes properties flat.
 * With `consentCategories`, the SDK is not loaded before an event grants them.
 */
export const destination: BrowserDestinationDefinition<DeviceSettings, DeviceClient> = {
  name: DESTINATION_NAMES.web,
  slug: 'actions-1flow',
  mode: 'device',
  description: 'Send identify and track calls to 1Flow, the in-app survey and messaging platform, through its web SDK.',
  settings: deviceSettings,
  presets: presets.map((preset) => ({ ...preset })),
  async initialize({ settings: raw, analytics }, { loadScript }) {
    const sdkSettings = resolveSdkSettings(raw)
    const order = watchDispatchOrder(analytics, sdkSettings.bufferLimit)
    // The user Analytics.js knows now, before any event of this page: given to the SDK first once it is ready.
    const atStart = userAtStart(analytics)
    const load = (): Promise<SdkClient> =>
      loadOneFlowSdk(sdkSettings, browserSdkDeps(window, loadScript), { timeoutMs: sdkSettings.loadTimeoutMs }).then(
        (sdk) => {
          // The user Analytics.js already knows goes to the SDK first; a reset makes the client forget it.
          followUser(analytics, sdk, atStart)
          return sdk
        }
      )
    // Consent to wait for: ready at once, the SDK loaded by the first event that grants it (perform has already
    // skipped the ones that do not).
    const { consentCategories } = sdkSettings
    if (consentCategories.length > 0) return order.ready(load, consentCategories)
    try {
      return order.ready(await load(), consentCategories)
    } catch (error) {
      order.stop()
      throw error
    }
  },
  actions: { identifyUser, trackEvent, trackPage, identifyGroup }
}

export default browserDestination(destination)
