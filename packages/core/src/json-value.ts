import { InvalidPayloadError } from './errors'

export type JsonPrimitive = string | number | boolean | null
export type JsonValue = JsonPrimitive | JsonValue[] | JsonObject
export interface JsonObject {
  [key: string]: JsonValue
}

/** Keys that could reach an object's prototype; they never appear in anything core returns. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype'])

/** Deeper nesting than this is refused rather than risking the caller's stack. */
export const MAX_DEPTH = 64

function convert(value: unknown, path: string, depth: number, ancestors: Set<object>, field: string): JsonValue | undefined {
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
  const obj = value as object
  if (typeof (obj as { toJSON?: unknown }).toJSON === 'function') {
    // Dates (and anything else that knows its JSON form) are converted the way JSON.stringify would.
    return convert((obj as { toJSON(): unknown }).toJSON(), path, depth, ancestors, field)
  }
  if (depth >= MAX_DEPTH) {
    throw new InvalidPayloadError(field, 'too-deep', `"${path}" is nested more than ${MAX_DEPTH} levels deep; flatten it before sending.`)
  }
  if (ancestors.has(obj)) {
    throw new InvalidPayloadError(field, 'circular', `"${path}" refers back to itself (a circular reference); it cannot be sent as JSON.`)
  }
  ancestors.add(obj)
  let out: JsonValue
  if (Array.isArray(obj)) {
    out = obj.map((item, i) => convert(item, `${path}[${i}]`, depth + 1, ancestors, field) ?? null)
  } else {
    const record: JsonObject = {}
    for (const key of Object.keys(obj)) {
      if (FORBIDDEN_KEYS.has(key)) continue
      const converted = convert((obj as Record<string, unknown>)[key], `${path}.${key}`, depth + 1, ancestors, field)
      if (converted !== undefined) record[key] = converted
    }
    out = record
  }
  ancestors.delete(obj)
  return out
}

/** A JSON-safe deep copy: Dates become ISO strings, `undefined` is dropped, prototype keys never appear. */
export function toJsonValue(value: unknown, field: string): JsonValue | undefined {
  return convert(value, field, 0, new Set(), field)
}

/** Like toJsonValue, for fields that must be objects: absent or null gives `{}`, anything else but an object is refused. */
export function toJsonObject(value: unknown, field: string): JsonObject {
  if (value === undefined || value === null) return {}
  const converted = toJsonValue(value, field)
  if (converted === undefined) return {}
  if (converted === null || typeof converted !== 'object' || Array.isArray(converted)) {
    throw new InvalidPayloadError(field, 'type', `"${field}" must be an object of key/value pairs, not ${describe(value)}.`)
  }
  return converted
}

/** A user or anonymous id as 1Flow wants it: a non-blank string; finite numbers become strings. */
export function toId(value: unknown): string | undefined {
  if (typeof value === 'string') return value.trim() === '' ? undefined : value
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  return undefined
}

/** Short description of a value's type for error messages (never the value itself). */
export function describe(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  const t = typeof value
  return t === 'object' ? 'an object' : `a ${t}`
}
