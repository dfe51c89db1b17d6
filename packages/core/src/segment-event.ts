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

/** Names under which a Segment `integrations` object can address 1Flow. */
export const INTEGRATION_NAMES = ['1Flow', '1Flow Web (Actions)', '1Flow Cloud (Actions)'] as const

/**
 * Honours Segment's `integrations` object: `{All: false}` or `{'1Flow': false}` (any of INTEGRATION_NAMES)
 * turns 1Flow off, unless one of those names is explicitly enabled (`true` or a settings object).
 */
export function isEnabledByIntegrations(integrations: unknown, names: readonly string[] = INTEGRATION_NAMES): boolean {
  if (typeof integrations !== 'object' || integrations === null) return true
  const flags = integrations as Record<string, unknown>
  let disabled = false
  for (const name of names) {
    if (!Object.prototype.hasOwnProperty.call(flags, name)) continue
    const flag = flags[name]
    if (flag === false) disabled = true
    else if (flag === true || (typeof flag === 'object' && flag !== null)) return true
  }
  return !disabled && flags.All !== false
}

/** The time an event happened, as Segment reports it. */
export function eventTimestamp(event: SegmentEvent): unknown {
  return event.timestamp ?? event.originalTimestamp
}
