/**
 * 1Flow's survey-response webhook → a Segment track event. 1Flow POSTs one JSON document per new response
 * (its "Project webhook alerts"); the documented example has `alert_name`, `alert_id`, `project_name`,
 * `survey_id`, `platform`, `survey_info` {`name`, `trigger_event_name`, `screens[]` of {`title`, `answer`,
 * `type`}}, `trigger_event` {`event_name`} and a `user` object whose fields are not documented. Everything
 * is read defensively: a missing or odd field is left out, never an error, and the payload itself is kept
 * (bounded) under `properties.raw`.
 */
import { toTimestamp } from './commands.js'
import { utf8ByteLength } from './http-contract.js'
import { toId, toJsonValue, type JsonObject, type JsonValue } from './json-value.js'
import { SEGMENT_LIMITS } from './segment-contract.js'

export const SURVEY_RESPONSE_EVENT = 'Survey Response Submitted'

/** The converted event stays under this many bytes of JSON, a margin below Segment's 32 KB per event. */
export const SURVEY_EVENT_MAX_BYTES = SEGMENT_LIMITS.eventBytes - 2 * 1024

/** `properties.raw` (the webhook's JSON text) is cut to at most this many characters. */
export const SURVEY_RAW_MAX_CHARS = 8 * 1024

export interface SurveyAnswer {
  readonly question: string | null
  readonly answer: JsonValue
  readonly type: string | null
}

export interface SegmentTrackEvent {
  readonly type: 'track'
  readonly event: string
  readonly messageId: string
  readonly timestamp: string
  readonly userId?: string
  readonly anonymousId?: string
  readonly properties: JsonObject
  readonly context: JsonObject
}

export interface SurveyConversion {
  readonly event: SegmentTrackEvent
  /** Present when 1Flow sent an `alert_id`; the webhook's identity for deduplication. */
  readonly alertId?: string
  /** What had to be cut to stay within Segment's size limit (empty when nothing was). */
  readonly truncated: readonly string[]
}

export interface SurveyConversionOptions {
  /** Default `Survey Response Submitted`. */
  readonly eventName?: string
  /** When the relay received the webhook (ms since the epoch): the timestamp when 1Flow sends none. */
  readonly receivedAt: number
  /** messageId to use when the webhook has no `alert_id` (e.g. a digest of the body, so 1Flow's retries repeat it). */
  readonly fallbackId: string
  /** `context.library` of the converted event. */
  readonly library?: { readonly name: string; readonly version: string }
}

type Obj = Record<string, unknown>
const asObject = (v: unknown): Obj | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined
// NUL is dropped from every id and name, as the relay's ingest does for client ids: a database text column
// cannot hold it, and no real id contains it.
const firstString = (...values: unknown[]): string | undefined => {
  for (const v of values) {
    const s = toId(typeof v === 'string' ? v.replace(/\u0000/g, '') : v)
    if (s !== undefined) return s
  }
  return undefined
}

// The 1Flow user object is undocumented: these are the names we accept, in order of preference.
const APP_USER_ID_KEYS = ['user_id', 'userId', 'external_id', 'externalId', 'app_user_id'] as const
const ONEFLOW_USER_ID_KEYS = ['_id', 'id', 'oneflow_user_id', 'system_id', 'anonymous_user_id', 'device_id'] as const
const TIMESTAMP_KEYS = ['submitted_at', 'created_at', 'createdAt', 'timestamp', 'response_time', 'time'] as const

/** An ISO-8601 time from a date string, or from epoch seconds or milliseconds (number or digits). */
function toIsoTime(value: unknown): string | undefined {
  const epoch =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && /^\d+$/.test(value.trim())
        ? Number(value)
        : undefined
  if (epoch === undefined) return typeof value === 'string' ? toTimestamp(value) : undefined
  if (!Number.isFinite(epoch) || epoch <= 0) return undefined
  const d = new Date(epoch < 1e11 ? epoch * 1000 : epoch)
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString()
}

/** A copy of `value` with every string cut to `maxChars` and every array to `maxItems`; reports whether anything was cut. */
function clip(value: JsonValue, maxChars: number, maxItems: number, cut: { any: boolean }): JsonValue {
  if (typeof value === 'string') {
    if (value.length <= maxChars) return value
    cut.any = true
    return `${value.slice(0, maxChars)}…`
  }
  if (Array.isArray(value)) {
    if (value.length > maxItems) cut.any = true
    return value.slice(0, maxItems).map((v) => clip(v, maxChars, maxItems, cut))
  }
  if (value !== null && typeof value === 'object') {
    const out: JsonObject = {}
    for (const [k, v] of Object.entries(value)) out[k] = clip(v, maxChars, maxItems, cut)
    return out
  }
  return value
}

/** An answer as one warehouse-friendly scalar: lists of scalars joined with ", ", objects as JSON text. */
function flatAnswer(answer: JsonValue): string | number | boolean | null {
  if (answer === null || typeof answer !== 'object') return answer
  if (Array.isArray(answer) && answer.every((a) => a === null || typeof a !== 'object'))
    return answer.map((a) => String(a)).join(', ')
  return JSON.stringify(answer)
}

function readAnswers(screens: unknown): SurveyAnswer[] {
  if (!Array.isArray(screens)) return []
  return screens.map((screen) => {
    const s: Obj = asObject(screen) ?? { answer: screen }
    return {
      question: firstString(s.title, s.question, s.name) ?? null,
      answer: toJsonValue(s.answer ?? s.answers ?? s.value ?? null, 'answer') ?? null,
      type: firstString(s.type, s.question_type) ?? null
    }
  })
}

const jsonBytes = (value: unknown): number => utf8ByteLength(JSON.stringify(value))

/**
 * Converts one 1Flow survey-response webhook payload into a Segment track event. Never throws for an odd
 * payload: unknown fields are ignored, missing ones left out, and the event is kept under Segment's size
 * limit by cutting long answers first and the raw copy last (`truncated` says what was cut).
 */
export function surveyResponseToTrack(payload: unknown, options: SurveyConversionOptions): SurveyConversion {
  const body = asObject(payload) ?? {}
  const info = asObject(body.survey_info) ?? asObject(body.survey) ?? {}
  const user = asObject(body.user) ?? {}
  const trigger = asObject(body.trigger_event)
  const alertId = firstString(body.alert_id, body.alertId)

  const userId = firstString(...APP_USER_ID_KEYS.map((k) => user[k]))
  const oneflowUserId = firstString(...ONEFLOW_USER_ID_KEYS.map((k) => user[k]))
  // Segment needs userId or anonymousId. Without an app user id, the 1Flow user's id gives a stable one
  // (the same person keeps the same anonymousId across responses); without either, the response's own id.
  const anonymousId = userId ? undefined : `1flow-${oneflowUserId ?? `response-${alertId ?? options.fallbackId}`}`

  let timestamp: string | undefined
  for (const key of TIMESTAMP_KEYS) timestamp ??= toIsoTime(body[key]) ?? toIsoTime(info[key])
  timestamp ??= new Date(options.receivedAt).toISOString()

  const answers = readAnswers(info.screens ?? body.screens ?? body.answers)
  const base: JsonObject = {}
  const put = (key: string, value: string | undefined) => {
    if (value !== undefined) base[key] = value
  }
  put('survey_id', firstString(body.survey_id, info.survey_id, info.id, info._id))
  put('survey_name', firstString(info.name, body.survey_name))
  put('platform', firstString(body.platform, info.platform))
  put(
    'trigger_event',
    firstString(trigger?.event_name, trigger?.name, info.trigger_event_name, body.trigger_event_name)
  )
  put('project_name', firstString(body.project_name))
  put('alert_name', firstString(body.alert_name))
  put('alert_id', alertId)
  put('oneflow_user_id', oneflowUserId)

  const truncated: string[] = []
  // Long answers are cut until the event fits, leaving room for a short raw copy; a survey with very many
  // screens keeps its first answers (answer_count still says how many there were).
  const buildAnswers = (maxChars: number, maxAnswers: number) => {
    const cut = { any: maxAnswers < answers.length }
    const list = answers.slice(0, maxAnswers).map((a) => ({
      question: a.question === null ? null : (clip(a.question, maxChars, 100, cut) as string),
      answer: clip(a.answer, maxChars, 100, cut),
      type: a.type === null ? null : (clip(a.type, 100, 100, cut) as string)
    }))
    const props: JsonObject = { ...base, answers: list, answer_count: answers.length }
    list.forEach((a, i) => (props[`answer_${i + 1}`] = clip(flatAnswer(a.answer), maxChars, 100, cut)))
    return { props, cut: cut.any }
  }
  const rawJson = JSON.stringify(toJsonValue(payload, 'raw') ?? null)
  const frame = (properties: JsonObject): SegmentTrackEvent => ({
    type: 'track',
    event: options.eventName ?? SURVEY_RESPONSE_EVENT,
    // Segment takes messageIds shorter than 100 characters; real alert ids are far shorter.
    messageId: `1flow-alert-${alertId ?? options.fallbackId}`.slice(0, SEGMENT_LIMITS.messageIdChars - 1),
    timestamp,
    ...(userId !== undefined ? { userId } : { anonymousId: anonymousId as string }),
    properties,
    context: {
      integration: { name: '1flow-webhook' },
      ...(options.library && { library: { name: options.library.name, version: options.library.version } })
    }
  })
  // Room kept for a short raw copy (up to 1 KB of text, escaped).
  const rawReserve = Math.min(rawJson.length, 1024) * 2
  const fits = (props: JsonObject) => jsonBytes(frame(props)) + rawReserve <= SURVEY_EVENT_MAX_BYTES
  let built = buildAnswers(2000, answers.length)
  for (const maxChars of [1000, 500, 200, 80, 20]) {
    if (fits(built.props)) break
    built = buildAnswers(maxChars, answers.length)
  }
  for (let keep = answers.length; !fits(built.props) && keep > 0;) {
    keep = Math.floor(keep * 0.8)
    built = buildAnswers(20, keep)
  }
  if (built.cut) truncated.push('answers')
  // The raw copy takes what is left, up to its own cap.
  let rawMax = Math.min(SURVEY_RAW_MAX_CHARS, rawJson.length)
  const withRaw = (): JsonObject => ({
    ...built.props,
    raw: rawJson.slice(0, rawMax),
    ...(rawMax < rawJson.length && { raw_truncated: true }),
    ...(built.cut && { answers_truncated: true })
  })
  let properties = withRaw()
  while (rawMax > 0 && jsonBytes(frame(properties)) > SURVEY_EVENT_MAX_BYTES) {
    rawMax = Math.floor(rawMax / 2)
    properties = withRaw()
  }
  if (rawMax < rawJson.length) truncated.push('raw')
  return { event: frame(properties), ...(alertId !== undefined && { alertId }), truncated }
}
