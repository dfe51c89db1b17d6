import type { ActionKey } from './actions/registry.js'

/** Segment's limit: "Individual destination instances have support a maximum of 50 mappings." */
export const MAX_SUBSCRIPTIONS = 50

/** A mapping as Segment stores it: which action, on which trigger, with which field mapping. */
export interface Subscription {
  readonly name?: string
  readonly subscribe: string
  readonly partnerAction: string
  readonly mapping?: Record<string, unknown>
  readonly enabled?: boolean
}

/** A validated subscription: known action, a trigger that reads as written, a mapping (defaults filled in when omitted). */
export interface ValidSubscription {
  readonly name: string
  readonly subscribe: string
  readonly partnerAction: ActionKey
  readonly mapping: Record<string, unknown>
}
