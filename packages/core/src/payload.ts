import type { InputField } from '@segment/actions-core'
import { InvalidPayloadError } from './errors'
import { describe } from './json-value'

function coerceScalar(field: InputField, key: string, value: unknown): unknown {
  const bad = (): never => {
    throw new InvalidPayloadError(key, 'type', `Field "${key}" (${field.label}) must be ${article(field.type)}, got ${describe(value)}.`)
  }
  switch (field.type) {
    case 'string':
    case 'text':
    case 'password':
      if (typeof value === 'string') return value
      if ((typeof value === 'number' && Number.isFinite(value)) || typeof value === 'boolean') return String(value)
      return bad()
    case 'number':
    case 'integer': {
      const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value
      if (typeof n !== 'number' || !Number.isFinite(n) || (field.type === 'integer' && !Number.isInteger(n))) return bad()
      return n
    }
    case 'boolean':
      if (typeof value === 'boolean') return value
      if (value === 'true' || value === 'false') return value === 'true'
      return bad()
    case 'datetime':
      if (typeof value === 'string' || typeof value === 'number') return value
      return bad()
    case 'object':
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value
      return bad()
    default:
      return value
  }
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`
}

interface FieldCheck {
  readonly key: string
  readonly field: InputField
  readonly required: boolean
  readonly allowNull: boolean
  readonly multiple: boolean
}

// Field lists are static, so each is compiled once into a flat list of checks (validation is on every event's path).
const compiled = new WeakMap<Record<string, InputField>, readonly FieldCheck[]>()

function checksFor(fields: Record<string, InputField>): readonly FieldCheck[] {
  let checks = compiled.get(fields)
  if (checks === undefined) {
    checks = Object.keys(fields).map((key) => {
      const field = fields[key] as InputField
      return { key, field, required: field.required === true, allowNull: field.allowNull === true, multiple: field.multiple === true }
    })
    compiled.set(fields, checks)
  }
  return checks
}

/**
 * Checks a mapped payload against its fields the way Segment's cloud pipeline does (root '' and
 * disallowed null count as absent; required fields must be present; scalars are coerced where Segment
 * coerces them; unknown keys are dropped) and returns a new payload. Throws InvalidPayloadError naming the field.
 */
export function validatePayload<P>(fields: Record<string, InputField>, payload: unknown): P {
  const input = (typeof payload === 'object' && payload !== null ? payload : {}) as Record<string, unknown>
  const out: Record<string, unknown> = {}
  for (const { key, field, required, allowNull, multiple } of checksFor(fields)) {
    let value = input[key]
    if (value === '' || (value === null && !allowNull)) value = undefined
    if (value === undefined) {
      if (required) {
        throw new InvalidPayloadError(key, 'missing', `Field "${key}" (${field.label}) is required but the event gave it no value; check its mapping.`)
      }
      continue
    }
    if (value === null) out[key] = null
    else if (multiple) out[key] = (Array.isArray(value) ? value : [value]).map((v) => coerceScalar(field, key, v))
    else out[key] = coerceScalar(field, key, value)
  }
  return out as P
}
