import { InvalidPayloadError } from './payload-errors.js'
import { skip, type Command, type CommandContext, type Skip } from './commands.js'
import { consentSkip } from './consent-skip.js'
import { toIdentifyCommand } from './actions/identify-user.js'
import { toTrackCommand } from './actions/track-event.js'
import { toCommand, type ActionKey } from './actions/registry.js'
import { PAGE_EVENT_NAME } from './actions/shared-fields.js'
import { GROUP_ATTRIBUTE_PREFIX } from './actions/identify-group.js'
import { eventTimestamp, isEnabledByIntegrations, type SegmentEvent } from './segment-event.js'

/** The event could not be mapped into a valid payload; `error` names the field. */
export interface Invalid {
  readonly kind: 'invalid'
  readonly error: InvalidPayloadError
}

export type Outcome = Command | Skip | Invalid

/** What became of an event for one subscription (or, without `actionKey`, for the event as a whole). */
export interface MappedResult {
  readonly subscription?: string
  readonly actionKey?: ActionKey
  readonly outcome: Outcome
}

/** A subscription that matched an event, with its payload resolved. */
export interface Route {
  readonly subscription: string
  readonly actionKey: ActionKey
  readonly payload: unknown
}

export interface MapOptions {
  /** The name the event's `integrations` object addresses this destination by (default `1Flow`; see DESTINATION_NAMES). */
  readonly integrationName?: string
  /** Consent categories 1Flow needs (the consentCategories setting): an event that does not grant them is skipped. */
  readonly consentCategories?: readonly string[]
}

// mapping-kit's `get` semantics, kept exactly: a falsy parent ('' / null / 0 / false) is returned as the value.
function pick(source: unknown, key: string): unknown {
  return source && (source as Record<string, unknown>)[key]
}

function withoutUndefined(record: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(record)) if (record[key] !== undefined) out[key] = record[key]
  return out
}

/**
 * The default (preset) mapping of an action resolved directly, without mapping-kit. A property test
 * proves it equals mapping-kit's `transform(defaultMapping(fields), event)`.
 */
export function resolveDefaultPayload(actionKey: ActionKey, event: SegmentEvent): Record<string, unknown> {
  return actionKey === 'identifyUser'
    ? identifyDefaults(event)
    : actionKey === 'trackEvent'
      ? trackDefaults(event)
      : actionKey === 'trackPage'
        ? pageDefaults(event)
        : groupDefaults(event)
}

function groupDefaults(event: SegmentEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  if (event.userId !== undefined) out.userId = event.userId
  if (event.groupId !== undefined) out.groupId = event.groupId
  if (event.traits !== undefined) out.traits = event.traits
  out.prefix = GROUP_ATTRIBUTE_PREFIX
  return out
}

function identifyDefaults(event: SegmentEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  if (event.userId !== undefined) out.userId = event.userId
  if (event.traits !== undefined) out.traits = event.traits
  return out
}

function identity(out: Record<string, unknown>, event: SegmentEvent): Record<string, unknown> {
  if (event.userId !== undefined) out.userId = event.userId
  if (event.anonymousId !== undefined) out.anonymousId = event.anonymousId
  return out
}

function trackDefaults(event: SegmentEvent): Record<string, unknown> {
  const out = identity(event.event === undefined ? {} : { event_name: event.event }, event)
  if (event.properties !== undefined) out.properties = event.properties
  return out
}

function pageDefaults(event: SegmentEvent): Record<string, unknown> {
  const out = identity({ event_name: PAGE_EVENT_NAME }, event)
  const props = event.properties
  out.properties = withoutUndefined({
    name: event.name,
    path: pick(props, 'path'),
    url: pick(props, 'url'),
    title: pick(props, 'title'),
    referrer: pick(props, 'referrer'),
    search: pick(props, 'search')
  })
  return out
}

const PRESET_ROUTES = new Map<
  unknown,
  { subscription: string; actionKey: ActionKey; resolve: (event: SegmentEvent) => Record<string, unknown> }
>([
  ['track', { subscription: 'Track Event', actionKey: 'trackEvent', resolve: trackDefaults }],
  ['identify', { subscription: 'Identify User', actionKey: 'identifyUser', resolve: identifyDefaults }]
])

/** The preset route for an event (Track Event for track, Identify User for identify), or none. */
export function presetRoutes(event: SegmentEvent): Route[] {
  const preset = PRESET_ROUTES.get(event.type)
  if (preset === undefined) return []
  return [{ subscription: preset.subscription, actionKey: preset.actionKey, payload: preset.resolve(event) }]
}

type Build = (actionKey: ActionKey, payload: unknown, context: CommandContext) => Command | Skip

// The presets use only identify and track; dispatching on just those keeps Track Page View (opt-in, reached
// only through subscriptions) out of bundles that never subscribe to it.
const buildPreset: Build = (actionKey, payload, context) =>
  actionKey === 'identifyUser' ? toIdentifyCommand(payload, context) : toTrackCommand(payload, context)

function finish(event: SegmentEvent, routes: readonly Route[], options: MapOptions, build: Build): MappedResult[] {
  if (!isEnabledByIntegrations(event.integrations, options.integrationName)) {
    return [{ outcome: skip('disabled-by-integrations', "Not sent: the event's integrations object turns 1Flow off.") }]
  }
  const noConsent = consentSkip(event, options.consentCategories ?? [])
  if (noConsent) return [{ outcome: noConsent }]
  if (routes.length === 0) {
    const type = typeof event.type === 'string' ? event.type : 'unknown'
    return [{ outcome: skip('not-subscribed', `Not sent: no 1Flow mapping matches this ${type} event.`) }]
  }
  const context = { timestamp: eventTimestamp(event) }
  return routes.map(({ subscription, actionKey, payload }) => {
    try {
      return { subscription, actionKey, outcome: build(actionKey, payload, context) }
    } catch (error) {
      if (error instanceof InvalidPayloadError) return { subscription, actionKey, outcome: { kind: 'invalid', error } }
      throw error
    }
  })
}

/** Runs matched routes through validation and command building; an invalid payload becomes an `invalid` outcome. */
export function finishRoutes(event: SegmentEvent, routes: readonly Route[], options: MapOptions = {}): MappedResult[] {
  return finish(event, routes, options, toCommand)
}

/** Maps an event with the presets only (no mapping-kit, no FQL): the fast path every adapter uses by default. */
export function mapWithPresets(event: SegmentEvent, options: MapOptions = {}): MappedResult[] {
  return finish(event, presetRoutes(event), options, buildPreset)
}
