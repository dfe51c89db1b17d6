/**
 * 1Flow's HTTP API contract, kept in this one module (every 1Flow assumption, HTTP and otherwise, is listed in
 * docs/oneflow-api.md).
 *
 * Documented by 1Flow (docs.1flow.ai/integrations/http-api): base URL https://api.1flow.app/v1, header
 * `api_key`, JSON bodies, `POST /identify {user_id, traits?, timestamp?}`, 32 KB per request, 500 KB per
 * batch request, errors 400/401/413/429, stay under 500 requests/s.
 *
 * ASSUMED — no public source shows them: `POST /track {event, user_id?, anonymous_id?, properties?, timestamp?}`
 * and `POST /batch {batch: [{type: 'identify' | 'track', ...the same fields}]}`. If 1Flow's real shapes differ,
 * this module is the only place to change.
 *
 * Only the fields below are sent, and a field without a value is absent (never null): 1Flow documents no
 * other field, and an unknown one could be refused.
 */
import { toTimestamp, type Command, type IdentifyCommand, type TrackCommand } from './commands.js'
import { PayloadTooLargeError } from './payload-errors.js'
import type { JsonObject } from './json-value.js'

/** 1Flow's HTTP API. */
export const DEFAULT_API_BASE_URL = 'https://api.1flow.app/v1'

export const ONEFLOW_LIMITS = {
  /** 1Flow: "no hard rate limit", but stay at or under 500 requests per second. */
  maxRequestsPerSecond: 500,
  /** 1Flow: 32 KB per standard request. */
  maxRequestBytes: 32 * 1024,
  /** 1Flow: 500 KB per batch request. */
  maxBatchRequestBytes: 500 * 1024,
  /** What we pack batches to, leaving headroom under 500 KB (as analytics-node does). */
  batchPackBytes: 480 * 1024
} as const

export type OneFlowPath = '/identify' | '/track' | '/batch'

export interface IdentifyBody {
  user_id: string
  traits?: JsonObject
  timestamp?: string
}

export interface TrackBody {
  event: string
  user_id?: string
  anonymous_id?: string
  properties?: JsonObject
  timestamp?: string
}

export type BatchItem = ({ type: 'identify' } & IdentifyBody) | ({ type: 'track' } & TrackBody)

export interface BatchBody {
  batch: BatchItem[]
}

/** A ready-to-send request; `headers.api_key` is a secret and must never be logged. */
export interface OneFlowRequest {
  readonly method: 'POST'
  readonly path: OneFlowPath
  readonly url: string
  readonly headers: { readonly 'content-type': 'application/json'; readonly api_key: string }
  readonly body: string
  /** UTF-8 size of `body`. */
  readonly bytes: number
}

export interface ApiTarget {
  readonly apiBaseUrl: string
  readonly projectApiKey: string
}

/** UTF-8 byte length of a string (what counts against 1Flow's limits). */
export function utf8ByteLength(text: string): number {
  let bytes = 0
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code < 0x80) bytes += 1
    else if (code < 0x800) bytes += 2
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 4
      i++
    } else bytes += 3
  }
  return bytes
}

function nonEmpty(obj: JsonObject): JsonObject | undefined {
  for (const _ in obj) return obj
  return undefined
}

function identifyBody(cmd: IdentifyCommand): IdentifyBody {
  const traits = nonEmpty(cmd.traits)
  const timestamp = toTimestamp(cmd.timestamp)
  return {
    user_id: cmd.userId,
    ...(traits && { traits }),
    ...(timestamp !== undefined && { timestamp })
  }
}

function trackBody(cmd: TrackCommand): TrackBody {
  const properties = nonEmpty(cmd.properties)
  const timestamp = toTimestamp(cmd.timestamp)
  return {
    event: cmd.event,
    ...(cmd.userId !== undefined && { user_id: cmd.userId }),
    ...(cmd.anonymousId !== undefined && { anonymous_id: cmd.anonymousId }),
    ...(properties && { properties }),
    ...(timestamp !== undefined && { timestamp })
  }
}

/** The endpoint and JSON body 1Flow receives for one command. */
export function toWire(cmd: Command): { path: '/identify'; body: IdentifyBody } | { path: '/track'; body: TrackBody } {
  return cmd.kind === 'identify'
    ? { path: '/identify', body: identifyBody(cmd) }
    : { path: '/track', body: trackBody(cmd) }
}

/** The item a command becomes inside a `/batch` request. */
export function toBatchItem(cmd: Command): BatchItem {
  return cmd.kind === 'identify' ? { type: 'identify', ...identifyBody(cmd) } : { type: 'track', ...trackBody(cmd) }
}

function request(target: ApiTarget, path: OneFlowPath, body: string, bytes: number): OneFlowRequest {
  return {
    method: 'POST',
    path,
    url: `${target.apiBaseUrl.replace(/\/+$/, '')}${path}`,
    headers: { 'content-type': 'application/json', api_key: target.projectApiKey },
    body,
    bytes
  }
}

/** One command as one request to `/identify` or `/track`; throws PayloadTooLargeError above 32 KB. */
export function buildRequest(cmd: Command, target: ApiTarget): OneFlowRequest {
  const wire = toWire(cmd)
  const body = JSON.stringify(wire.body)
  const bytes = utf8ByteLength(body)
  if (bytes > ONEFLOW_LIMITS.maxRequestBytes) throw new PayloadTooLargeError(bytes, ONEFLOW_LIMITS.maxRequestBytes)
  return request(target, wire.path, body, bytes)
}

export interface PackedBatch {
  readonly request: OneFlowRequest
  /** Positions, in the commands given, of the items in this request (in order). */
  readonly indices: readonly number[]
}

export interface PackResult {
  readonly batches: readonly PackedBatch[]
  /** Positions of commands that alone exceed 32 KB: they can never be delivered as they are. */
  readonly tooLarge: readonly number[]
}

const BATCH_OPEN = '{"batch":['
const BATCH_CLOSE = ']}'

/** Packs commands, in order, into `/batch` requests of at most `maxBytes` (default 480 KB). */
export function packBatches(
  cmds: readonly Command[],
  target: ApiTarget,
  maxBytes: number = ONEFLOW_LIMITS.batchPackBytes,
  maxItems: number = Number.POSITIVE_INFINITY
): PackResult {
  const batches: PackedBatch[] = []
  const tooLarge: number[] = []
  const envelope = BATCH_OPEN.length + BATCH_CLOSE.length
  let items: string[] = []
  let indices: number[] = []
  let bytes = envelope
  const flush = () => {
    if (items.length === 0) return
    batches.push({
      request: request(target, '/batch', `${BATCH_OPEN}${items.join(',')}${BATCH_CLOSE}`, bytes),
      indices
    })
    items = []
    indices = []
    bytes = envelope
  }
  cmds.forEach((cmd, index) => {
    const item = JSON.stringify(toBatchItem(cmd))
    const itemBytes = utf8ByteLength(item)
    if (itemBytes > ONEFLOW_LIMITS.maxRequestBytes || itemBytes + envelope > maxBytes) {
      tooLarge.push(index)
      return
    }
    const added = itemBytes + (items.length > 0 ? 1 : 0)
    if (bytes + added > maxBytes || items.length >= maxItems) flush()
    bytes += itemBytes + (items.length > 0 ? 1 : 0)
    items.push(item)
    indices.push(index)
  })
  flush()
  return { batches, tooLarge }
}
