import type { ActionDefinition } from '@segment/actions-core'
import { actions, cloudBatchingFields, type ActionKey, type CloudSettings, type PayloadOf } from '@oneflow-seg/core'
import { sendBatch, sendOne } from './send'

/**
 * A cloud-mode action: core's definition (title, fields, default trigger) with the batching switches Segment's
 * platform reads, plus `perform` and `performBatch` on 1Flow's HTTP API.
 */
export function cloudAction<K extends ActionKey>(
  key: K
): ActionDefinition<CloudSettings, PayloadOf<(typeof actions)[K]['fields']> & PayloadOf<typeof cloudBatchingFields>> {
  return {
    ...actions[key],
    fields: { ...actions[key].fields, ...cloudBatchingFields },
    perform: (request, data) => sendOne(key, request, data),
    performBatch: (request, data) => sendBatch(key, request, data)
  }
}
