/**
 * What 1Flow would receive for an event, from a source's mappings, without sending anything: the checks ingest
 * makes, then core's mapping (presets or the source's subscriptions, its consent categories), then the HTTP body
 * cloud mode and the relay send and the web SDK call device mode and the plugin make. `oneflow-relay preview`,
 * `check-config` and the status page's preview show it; nothing here touches the queue, the network or a
 * credential.
 */
import {
  buildRequest,
  mapWithPresets,
  OneFlowError,
  PayloadTooLargeError,
  toSdkCall,
  type SdkCall,
  type SegmentEvent
} from '@oneflow-seg/core'
import { mapWithSubscriptions } from '@oneflow-seg/core/mapping'
import { jsonSyntaxError, type SourceConfig } from './config'
import { recheckEvent } from './ingest'

export interface PreviewSend {
  /** The subscription that sent it (custom mappings), absent for the presets. */
  readonly subscription?: string
  /** The request cloud mode and the relay make (the body; the `api_key` header is left out). */
  readonly http: { readonly method: 'POST'; readonly path: string; readonly body: unknown }
  /** The web SDK call device mode and the Analytics.js plugin make. */
  readonly sdk: SdkCall
}

export interface PreviewResult {
  readonly source: string
  /** The event's type, as given. */
  readonly type: unknown
  /** Refused at ingest (never queued): the code and why, as the relay would answer. */
  readonly rejected?: { readonly code: string; readonly error: string }
  readonly sent: readonly PreviewSend[]
  /** Why nothing (or not everything) is sent: skip reasons (not-subscribed, missing-user-id, no-consent, …). */
  readonly skipped: ReadonlyArray<{ readonly reason: string; readonly message: string; readonly subscription?: string }>
  /** Mapped, but a field breaks its schema: dead-lettered at delivery. */
  readonly invalid: ReadonlyArray<{ readonly error: string; readonly subscription?: string }>
}

/** A target for building request bodies only: never sent, and no key of anyone's. */
const PREVIEW_TARGET = { apiBaseUrl: 'https://api.1flow.app/v1', projectApiKey: 'preview' }

/** What `source`'s mappings make of `event` (a parsed JSON value). */
export function previewEvent(event: unknown, source: SourceConfig): PreviewResult {
  const type = typeof event === 'object' && event !== null ? (event as { type?: unknown }).type : undefined
  const base = { source: source.name, type }
  let text: string
  try {
    text = JSON.stringify(event) ?? 'null'
  } catch {
    // Too deep to write out again: ingest refuses such an event too.
    return {
      ...base,
      rejected: { code: 'too_deep', error: 'the event is nested too deep to read' },
      sent: [],
      skipped: [],
      invalid: []
    }
  }
  const problem = recheckEvent(text)
  if (problem)
    return {
      ...base,
      rejected: { code: problem.code, error: `the event ${problem.message}` },
      sent: [],
      skipped: [],
      invalid: []
    }
  const options = { consentCategories: source.consentCategories }
  const results = source.subscriptions
    ? mapWithSubscriptions(event as SegmentEvent, source.subscriptions, options)
    : mapWithPresets(event as SegmentEvent, options)
  const sent: PreviewSend[] = []
  const skipped: Array<{ reason: string; message: string; subscription?: string }> = []
  const invalid: Array<{ error: string; subscription?: string }> = []
  for (const { outcome, subscription } of results) {
    const named = subscription ? { subscription } : {}
    if (outcome.kind === 'skip') skipped.push({ reason: outcome.reason, message: outcome.message, ...named })
    else if (outcome.kind === 'invalid') invalid.push({ error: outcome.error.message, ...named })
    else {
      try {
        const request = buildRequest(outcome, PREVIEW_TARGET)
        sent.push({
          ...named,
          http: { method: 'POST', path: request.path, body: JSON.parse(request.body) as unknown },
          sdk: toSdkCall(outcome)
        })
      } catch (error) {
        if (!(error instanceof PayloadTooLargeError)) throw error
        invalid.push({ error: error.message, ...named })
      }
    }
  }
  return { ...base, sent, skipped, invalid }
}

/** One event's preview as `oneflow-relay preview` prints it and the status page shows it. */
export type IndexedPreview = { readonly index: number } & PreviewResult

/** What `source`'s mappings make of each of `events`, numbered from 0 in input order. */
export function previewEvents(events: readonly unknown[], source: SourceConfig): IndexedPreview[] {
  return events.map((event, index) => ({ index, ...previewEvent(event, source) }))
}

/** A preview's input that is not events; `line` and `column` (1-based) say where the JSON breaks, when it does. */
export class PreviewInputError extends OneFlowError {
  override readonly name = 'PreviewInputError'
  readonly code = 'INVALID_PREVIEW_INPUT'
  readonly remedy = 'fix-payload'
  constructor(
    message: string,
    readonly line?: number,
    readonly column?: number
  ) {
    super(message)
  }
}

/** Where `text` breaks the JSON grammar (it must: JSON.parse refused it), never quoting it. */
function syntaxError(text: string): PreviewInputError {
  const where = jsonSyntaxError(text)
  const at = / at line (\d+), column (\d+)$/.exec(where)
  const hint = '(give one JSON event, a {"batch": […]} body, or one event per line)'
  return at
    ? new PreviewInputError(`the input is not JSON: ${where} ${hint}`, Number(at[1]), Number(at[2]))
    : new PreviewInputError(`the input is not JSON ${hint}`)
}

/**
 * Events from a preview's input: one JSON value (an event, a {"batch": […]} body or an array), else NDJSON. What
 * is neither is refused with the line and column where it breaks: the line that is not JSON when the input reads
 * as NDJSON (its first line is an event of its own), else the place where the one JSON value breaks.
 */
export function parsePreviewInput(input: string): unknown[] {
  const text = input.replace(/^\uFEFF/, '')
  if (text.trim() === '') throw new PreviewInputError('the input is empty: give one JSON event, or one per line')
  try {
    const value: unknown = JSON.parse(text)
    if (Array.isArray(value)) return value
    const batch = (value as { batch?: unknown } | null)?.batch
    return Array.isArray(batch) ? batch : [value]
  } catch {
    // Lines are counted in the input as given, blank ones included, so the numbers match an editor's.
    const lines = text.split('\n')
    const events: unknown[] = []
    for (const [i, line] of lines.entries()) {
      if (line.trim() === '') continue
      try {
        events.push(JSON.parse(line) as unknown)
      } catch {
        // A pretty-printed event broken somewhere is one JSON value, not lines: say where in it.
        if (events.length === 0) throw syntaxError(text)
        // Earlier lines as blank lines: the place is found in this line and counted in the whole input.
        throw syntaxError(`${'\n'.repeat(i)}${line}`)
      }
    }
    return events
  }
}

/**
 * The event types a source's mappings send and skip, found with one sample event of each type; with custom
 * mappings, a type a subscription names (`type = "track" and event = …`) is sent when an event matches it.
 */
export function describeSource(source: SourceConfig): Array<{ type: string; sent: boolean; detail: string }> {
  const samples: Record<string, Record<string, unknown>> = {
    track: { type: 'track', event: 'Sample Event', userId: 'sample-user', properties: {} },
    identify: { type: 'identify', userId: 'sample-user', traits: { plan: 'sample' } },
    page: { type: 'page', name: 'Sample Page', userId: 'sample-user', properties: {} },
    screen: { type: 'screen', name: 'Sample Screen', userId: 'sample-user', properties: {} },
    group: { type: 'group', groupId: 'sample-group', userId: 'sample-user', traits: { name: 'Sample' } },
    alias: { type: 'alias', previousId: 'sample-old', userId: 'sample-user' }
  }
  return Object.entries(samples).map(([type, event]) => {
    const result = previewEvent({ messageId: `sample-${type}`, ...event }, source)
    if (result.sent.length > 0)
      return {
        type,
        sent: true,
        detail: result.sent.map((s) => `${s.http.path}${s.subscription ? ` (${s.subscription})` : ''}`).join(', ')
      }
    if (result.invalid.length > 0)
      return { type, sent: false, detail: `invalid, dead-lettered: ${result.invalid.map((i) => i.error).join('; ')}` }
    // A subscription that asks for this type by equality sends it when the rest of its condition matches.
    const asks = new RegExp(`(^|[^!])type\\s*=\\s*"${type}"`)
    const naming = (source.subscriptions ?? []).filter((sub) => asks.test(sub.subscribe))
    if (naming.length > 0)
      return { type, sent: true, detail: `when it matches ${naming.map((sub) => `"${sub.name}"`).join(', ')}` }
    return { type, sent: false, detail: result.skipped.map((s) => s.reason).join(', ') || 'not sent' }
  })
}
