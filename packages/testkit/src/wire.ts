const SECRET_KEYS = new Set(['api_key', 'apikey', 'authorization', 'writekey', 'projectapikey'])

/** Deep copy with object keys sorted, so snapshots do not depend on insertion order. */
export function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {}
    for (const key of Object.keys(value).sort()) out[key] = sortKeys((value as Record<string, unknown>)[key])
    return out
  }
  return value
}

/** Deep copy with secret-bearing keys (api_key, apiKey, authorization, writeKey, projectApiKey) replaced by "[redacted]". */
export function redactSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactSecrets)
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {}
    for (const [key, v] of Object.entries(value))
      out[key] = SECRET_KEYS.has(key.toLowerCase()) ? '[redacted]' : redactSecrets(v)
    return out
  }
  return value
}

export interface WireRequest {
  readonly method: string
  readonly path: string
  readonly headers?: Record<string, unknown>
  readonly body?: unknown
}

/** A request as a stable snapshot: keys sorted, secrets redacted, only the headers that carry meaning. */
export function normalizeWire(req: WireRequest): unknown {
  const headers: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(req.headers ?? {})) {
    const key = k.toLowerCase()
    if (key === 'content-type' || SECRET_KEYS.has(key)) headers[key] = v
  }
  return sortKeys(redactSecrets({ method: req.method, path: req.path, headers, body: req.body }))
}
