import type { DestinationDefinition } from '@segment/actions-core'
import { cloudSettings, DESTINATION_NAMES, presets, type CloudSettings } from '@oneflow-seg/core'
import identifyGroup from './identifyGroup'
import identifyUser from './identifyUser'
import trackEvent from './trackEvent'
import trackPage from './trackPage'

/**
 * "1Flow Cloud (Actions)": the cloud-mode counterpart of "1Flow Web (Actions)" for server-side sources
 * (analytics-node, the HTTP API, Reverse ETL). The same presets and fields (all from core), so a mapping moves
 * between the two modes unchanged, and the settings an HTTP API needs; events go to 1Flow's HTTP API.
 */
export const destination: DestinationDefinition<CloudSettings> = {
  name: DESTINATION_NAMES.cloud,
  slug: 'actions-1flow-cloud',
  mode: 'cloud',
  description: "Send identify and track calls to 1Flow's HTTP API from any Segment source, server-side ones included.",
  authentication: { scheme: 'custom', fields: cloudSettings },
  presets: presets.map((preset) => ({ ...preset })),
  actions: { identifyUser, trackEvent, trackPage, identifyGroup }
}

export default destination

// actions-core's runtime, from the copy bundled into this entry's build: run the destination with this
// `Destination` (see the package README for why not your own copy's).
export {
  Destination,
  IntegrationError,
  InvalidAuthenticationError,
  PayloadValidationError,
  RetryableError
} from '@segment/actions-core'
