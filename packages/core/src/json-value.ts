import { InvalidPayloadError } from './payload-errors.js'

export type JsonPrimitive = string | number | boolean | null
export type JsonValue = JsonPrimitive | JsonValue[] | JsonObject
export interface JsonObject {
  [key: string]: JsonValue
}

/** Keys that could reach an object's prototype; they never appear in anything core returns. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype'])

/** Deeper nesting than this is refused rather than risking the caller's stack. */
export const MAX_DEPTH = 64

const OBJECT_PROTOTYPE = Object.getPrototypeOf({}) as object

// True when `value` is already exactly what toJsonValue would produce (plain data, no Dates, no undefined,
// no non-finite numbers, no prototype keys, not too deep). Most events are, and then no copy is needed.
function isCleanJson(value: unknown, depth: number): boolean {
  if (value === null) return true
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return Number.isFinite(value)
    case 'object':
      break
    default:
      return false
  }
  if (depth >= MAX_DEPTH) return false
  if (Array.isArray(value)) {
    for (const item of value) if (!isCleanJson(item, depth + 1)) return false
    return true
  }
  const proto = Object.getPrototypeOf(value) as object | null
  if (proto !== OBJECT_PROTOTYPE && proto !== null) return false
  for (const key in value)
    if (FORBIDDEN_KEYS.has(key) || !isCleanJson((value as Record<string, unknown>)[key], depth + 1)) return false
  return true
}

function convert(value: unknown, depth: number, stack: object[], field: string): JsonValue | undefined {
  if (value === null) return null
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value
    case 'number':
      return Number.isFinite(value) ? value : null
    case 'bigint':
      return value.toString()
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined
  }
  const obj = value as Record<string, unknown>
  if (typeof obj.toJSON === 'function') {
    // Dates (and anything else that knows its JSON form) are converted the way JSON.stringify would.
    return convert((obj as { toJSON(): unknown }).toJSON(), depth, stack, field)
  }
  if (stack.includes(obj)) {
    throw new InvalidPayloadError(
      field,
      'circular',
      `"${field}" contains a circular reference; it cannot be sent as JSON.`
    )
  }
  if (depth >= MAX_DEPTH) {
    throw new InvalidPayloadError(
      field,
      'too-deep',
      `"${field}" is nested more than ${MAX_DEPTH} levels deep; flatten it before sending.`
    )
  }
  stack.push(obj)
  let out: JsonValue
  if (Array.isArray(obj)) {
    out = []
    for (const item of obj) out.push(convert(item, depth + 1, stack, field) ?? null)
  } else {
    const record: JsonObject = {}
    for (const key of Object.keys(obj)) {
      const converted = FORBIDDEN_KEYS.has(key) ? undefined : convert(obj[key], depth + 1, stack, field)
      if (converted !== undefined) record[key] = converted
    }
    out = record
  }
  stack.pop()
  return out
}

/**
 * A JSON-safe version of `value`: Dates become ISO strings, `undefined` is dropped, prototype keys never
 * appear. Input that is already clean JSON is returned as it is (never modified); anything else is copied.
 */
export function toJsonValue(value: unknown, field: string): JsonValue | undefined {
  return isCleanJson(value, 0) ? (value as JsonValue) : convert(value, 0, [], field)
}

/** The JSON-safe copy of an object field that validatePayload has already checked (absent gives `{}`). */
export function toJsonFields(value: Record<string, unknown> | undefined, field: string): JsonObject {
  return value === undefined ? {} : (toJsonValue(value, field) as JsonObject)
}

/** Like toJsonValue, for fields that must be objects: absent or null gives `{}`, anything else but an object is refused. */
export function toJsonObject(value: unknown, field: string): JsonObject {
  if (value === undefined || value === null) return {}
  const converted = toJsonValue(value, field)
  if (converted === undefined) return {}
  if (converted === null || typeof converted !== 'object' || Array.isArray(converted)) {
    throw new InvalidPayloadError(
      field,
      'type',
      `"${field}" must be an object of key/value pairs, not ${describe(value)}.`
    )
  }
  return converted
}

/**
 * True when `value` nests objects or arrays more than `max` levels deep. The walk stops at `max` levels, so a
 * hostile document nested thousands of levels deep costs at most `max` frames of stack.
 */
export function exceedsDepth(value: unknown, max: number = MAX_DEPTH): boolean {
  return deeperThan(value, max)
}

function deeperThan(value: unknown, levels: number): boolean {
  if (typeof value !== 'object' || value === null) return false
  if (levels <= 0) return true
  if (Array.isArray(value)) {
    for (const item of value) if (typeof item === 'object' && item !== null && deeperThan(item, levels - 1)) return true
    return false
  }
  for (const key in value) {
    const item = (value as Record<string, unknown>)[key]
    if (typeof item === 'object' && item !== null && deeperThan(item, levels - 1)) return true
  }
  return false
}

/** A user or anonymous id as 1Flow wants it: a non-blank string; finite numbers become strings. */
export function toId(value: unknown): string | undefined {
  if (typeof value === 'string') return value.trim() === '' ? undefined : value
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  return undefined
}

/** A value's type for error messages (never the value itself). */
export function describe(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value
}
