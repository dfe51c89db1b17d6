import type { InputField } from '@segment/actions-core'
import { InvalidPayloadError } from './payload-errors.js'
import { describe } from './json-value.js'

// 1Flow's fields are strings and objects only; another field type must be added here before it is used.
function coerceScalar(field: InputField, key: string, value: unknown): unknown {
  if (field.type === 'object') {
    if (typeof value === 'object' && !Array.isArray(value)) return value
  } else if (typeof value === 'string') {
    return value
  } else if ((typeof value === 'number' && Number.isFinite(value)) || typeof value === 'boolean') {
    // Segment coerces numbers and booleans in string fields to strings.
    return String(value)
  }
  throw new InvalidPayloadError(
    key,
    'type',
    `Field "${key}" (${field.label}) must be of type ${field.type}, not ${describe(value)}.`
  )
}

/**
 * Checks a mapped payload against its fields the way Segment's cloud pipeline does (root '' and
 * disallowed null count as absent; required fields must be present; scalars are coerced where Segment
 * coerces them; unknown keys are dropped) and returns a new payload. Throws InvalidPayloadError naming the field.
 * (No 1Flow field is `multiple`; a list field would need an array branch here.)
 */
export function validatePayload<P>(fields: Record<string, InputField>, payload: unknown): P {
  const input = (typeof payload === 'object' && payload !== null ? payload : {}) as Record<string, unknown>
  const out: Record<string, unknown> = {}
  for (const key in fields) {
    const field = fields[key] as InputField
    let value = input[key]
    if (value === '' || (value === null && !field.allowNull)) value = undefined
    if (value === undefined) {
      if (field.required === true) {
        throw new InvalidPayloadError(
          key,
          'missing',
          `Field "${key}" (${field.label}) is required but has no value; check its mapping.`
        )
      }
    } else out[key] = value === null ? null : coerceScalar(field, key, value)
  }
  return out as P
}
