import { defineFields } from '../field-types.js'

/** What Segment's platform puts in one batch for cloud mode unless the mapping says otherwise. */
export const DEFAULT_BATCH_SIZE = 500

/**
 * Cloud mode's batching switches, on every cloud action: Segment's platform calls `performBatch` for a mapping
 * with `enable_batching` on, with up to `batch_size` events. Off by default, as on Segment's cloud destinations.
 * Device mode has no use for them.
 */
export const cloudBatchingFields = /* @__PURE__ */ defineFields({
  enable_batching: {
    label: 'Batch Data to 1Flow',
    description: "Send events to 1Flow's /batch endpoint, many per request, instead of one request per event.",
    type: 'boolean',
    default: false
  },
  batch_size: {
    label: 'Max Batch Size',
    description: 'The most events in one batch (1 to 1,000). Requests also stay under 480 KB.',
    type: 'number',
    default: DEFAULT_BATCH_SIZE,
    minimum: 1,
    maximum: 1000
  }
})
