import { DESTINATION_NAMES } from './destination-names.js'

/** The parts of a Segment event core reads. Anything else is carried along untouched. */
export interface SegmentEvent {
  readonly type?: string
  readonly event?: unknown
  readonly name?: unknown
  readonly userId?: unknown
  readonly anonymousId?: unknown
  readonly traits?: unknown
  readonly properties?: unknown
  readonly integrations?: unknown
  readonly timestamp?: unknown
  readonly originalTimestamp?: unknown
  readonly messageId?: unknown
  readonly context?: unknown
  readonly [key: string]: unknown
}

/**
 * Honours Segment's `integrations` object as Analytics.js does: the destination's own name decides when the
 * object names it (`false` turns it off; `true` or a settings object turns it on, even under `All: false`);
 * otherwise `All: false` turns it off. Other destinations' names do not matter.
 */
export function isEnabledByIntegrations(integrations: unknown, name: string = DESTINATION_NAMES.plugin): boolean {
  if (typeof integrations !== 'object' || integrations === null) return true
  const flags = integrations as Record<string, unknown>
  if (Object.prototype.hasOwnProperty.call(flags, name)) {
    const flag = flags[name]
    if (flag === false) return false
    if (flag === true || (typeof flag === 'object' && flag !== null)) return true
  }
  return flags.All !== false
}

/** The time an event happened, as Segment reports it. */
export function eventTimestamp(event: SegmentEvent): unknown {
  return event.timestamp ?? event.originalTimestamp
}
