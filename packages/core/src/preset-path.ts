/**
 * The two presets — Track Event on `type = "track"`, Identify User on `type = "identify"` — as one direct
 * function, for the Analytics.js plugin's default path: the outcomes of `mapWithPresets` (a property test proves
 * they are the same), without the generic field-driven validation, the other actions or any mapping code, so the
 * plugin stays small and each event costs a few property reads.
 */
import { commandTimestamp, skip, type Command, type Skip } from './commands.js'
import { consentSkip } from './consent-skip.js'
import { InvalidPayloadError } from './payload-errors.js'
import { toId, toJsonFields, toJsonObject } from './json-value.js'
import { DESTINATION_NAMES } from './destination-names.js'
import { eventTimestamp, isEnabledByIntegrations, type SegmentEvent } from './segment-event.js'

/** What an event becomes under the presets: a command, a skip with its reason, or an invalid field. */
export type PresetOutcome = Command | Skip | { readonly kind: 'invalid'; readonly error: InvalidPayloadError }

const ABSENT = Symbol('absent')

function invalid(field: string, code: 'missing' | 'type', message: string): never {
  throw new InvalidPayloadError(field, code, message)
}

// The preset fields' rules as validatePayload applies them: '' and null are absent; a string field takes a
// string, or a finite number or a boolean as its string; an object field takes an object that is not an array.
function text(value: unknown, field: string): string | typeof ABSENT {
  if (value === undefined || value === null || value === '') return ABSENT
  if (typeof value === 'string') return value
  if ((typeof value === 'number' && Number.isFinite(value)) || typeof value === 'boolean') return String(value)
  return invalid(field, 'type', `Field "${field}" must be of type string.`)
}

function record(value: unknown, field: string): Record<string, unknown> | undefined {
  if (value === undefined || value === null || value === '') return undefined
  if (typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>
  return invalid(field, 'type', `Field "${field}" must be of type object.`)
}

const id = (value: unknown, field: string): string | undefined => {
  const v = text(value, field)
  return v === ABSENT ? undefined : toId(v)
}

function track(event: SegmentEvent): Command {
  // In validatePayload's order: every field's type first, then the blank name, then the properties' content.
  const name = text(event.event, 'event_name')
  if (name === ABSENT) return invalid('event_name', 'missing', 'Field "event_name" is required but has no value.')
  const userId = id(event.userId, 'userId')
  const anonymousId = id(event.anonymousId, 'anonymousId')
  const props = record(event.properties, 'properties')
  if (name.trim() === '')
    return invalid('event_name', 'missing', 'Field "event_name" is blank; 1Flow needs an event name.')
  const properties = toJsonFields(props, 'properties')
  const timestamp = commandTimestamp({ timestamp: eventTimestamp(event) })
  return {
    kind: 'track',
    event: name,
    properties,
    ...(userId !== undefined && { userId }),
    ...(anonymousId !== undefined && { anonymousId }),
    ...(timestamp !== undefined && { timestamp })
  }
}

function identify(event: SegmentEvent): Command | Skip {
  const userId = text(event.userId, 'userId')
  // The traits are checked first, as validatePayload checks every field before the User ID decides.
  const traits = record(event.traits, 'traits')
  if (userId === ABSENT || userId.trim() === '')
    return skip('missing-user-id', 'Identify User not sent: the event has no User ID.')
  const timestamp = commandTimestamp({ timestamp: eventTimestamp(event) })
  return {
    kind: 'identify',
    userId,
    traits: toJsonObject(traits, 'traits'),
    ...(timestamp !== undefined && { timestamp })
  }
}

/**
 * The presets' outcome for an event (a `not-subscribed` skip when no preset matches its type). `integrationName`
 * is the name the event's `integrations` object addresses the caller by (default `1Flow`); `consentCategories`
 * those 1Flow needs granted.
 */
export function presetOutcome(
  event: SegmentEvent,
  integrationName: string = DESTINATION_NAMES.plugin,
  consentCategories: readonly string[] = []
): PresetOutcome {
  const type = event.type
  if (!isEnabledByIntegrations(event.integrations, integrationName)) {
    return skip('disabled-by-integrations', "Not sent: the event's integrations object turns 1Flow off.")
  }
  const noConsent = consentSkip(event, consentCategories)
  if (noConsent) return noConsent
  if (type !== 'track' && type !== 'identify') {
    return skip(
      'not-subscribed',
      `Not sent: no 1Flow mapping matches this ${typeof type === 'string' ? type : 'unknown'} event.`
    )
  }
  try {
    return type === 'track' ? track(event) : identify(event)
  } catch (error) {
    if (error instanceof InvalidPayloadError) return { kind: 'invalid', error }
    throw error
  }
}
