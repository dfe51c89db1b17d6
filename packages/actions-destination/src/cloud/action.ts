import type { ActionDefinition } from '@segment/actions-core'
import { actions, type ActionKey, type PayloadOf, type Settings } from '@oneflow-seg/core'
import { sendBatch, sendOne } from './send'

/** A cloud-mode action: core's definition (title, fields, default trigger) plus `perform` and `performBatch` on 1Flow's HTTP API. */
export function cloudAction<K extends ActionKey>(
  key: K
): ActionDefinition<Settings, PayloadOf<(typeof actions)[K]['fields']>> {
  return {
    ...actions[key],
    perform: (request, data) => sendOne(key, request, data),
    performBatch: (request, data) => sendBatch(key, request, data)
  }
}
