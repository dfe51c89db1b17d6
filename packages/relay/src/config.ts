import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import {
  DEFAULT_API_BASE_URL,
  InvalidSettingsError,
  InvalidSubscriptionError,
  OneFlowError,
  resolveSettings,
  SEGMENT_DEFAULT_HOST,
  SURVEY_RESPONSE_EVENT,
  type Subscription
} from '@oneflow-seg/core'
import { compileSubscriptions, type CompiledSubscription } from '@oneflow-seg/core/mapping'
import { CONFIG_SECTIONS, DEFAULTS, NUMERIC_SETTINGS, type NumericSetting } from './config-schema'

/** A configuration problem: `key` is the path of the bad key (e.g. `sources[1].projectApiKey`). */
export class ConfigError extends OneFlowError {
  override readonly name = 'ConfigError'
  readonly code = 'INVALID_CONFIG'
  readonly remedy = 'fix-config'
  constructor(readonly problems: ReadonlyArray<{ readonly key: string; readonly message: string }>) {
    super(problems.map((p) => `${p.key}: ${p.message}`).join('\n'))
  }
}

export interface SourceConfig {
  /** A name for logs, metrics and the dead-letter store (never the key). */
  readonly name: string
  readonly writeKey: string
  readonly projectApiKey: string
  /** A stable, non-secret id of the 1Flow project (rate limits, pauses and queue rows are per project). */
  readonly projectId: string
  /** Custom subscriptions, compiled; undefined means core's presets. */
  readonly subscriptions?: readonly CompiledSubscription[]
  /** Consent categories an event must grant to be sent to 1Flow (none: no consent check). */
  readonly consentCategories: readonly string[]
  /** The secret in the survey-response webhook URL 1Flow calls (`/webhooks/1flow/{name}`); undefined: no webhook. */
  readonly webhookToken?: string
  /** Where this source's 1Flow survey responses go: a Segment source (set together with webhookToken). */
  readonly segment?: SegmentTarget
}

export interface SegmentTarget {
  readonly writeKey: string
  /** Segment's HTTP Tracking API base, e.g. https://api.segment.io (no /v1). */
  readonly host: string
  /** The track event's name. */
  readonly eventName: string
  /** A stable, non-secret id of this Segment destination (queue rows, pauses and rate limits are per lane). */
  readonly laneId: string
}

export interface RelayConfig {
  readonly listen: {
    readonly host: string
    readonly port: number
    /** Health, metrics and the status page on a listener of their own (off the ingest port browsers reach). */
    readonly ops?: { readonly host: string; readonly port: number }
  }
  /** `sqlite:<path>` (relative to the config file) or `postgres://…`. */
  readonly queue: string
  readonly oneflow: {
    readonly apiBaseUrl: string
    readonly mode: 'batch' | 'single'
    readonly maxRequestsPerSecond: number
    /** Requests in flight per project at once. */
    readonly concurrency: number
    readonly requestTimeoutMs: number
  }
  readonly limits: {
    /** Refuse new events with 503 once the queue's live data (queued events and dead letters) passes this size. */
    readonly diskCapBytes: number
    readonly dedupWindowHours: number
    readonly giveUpAfterHours: number
    /** Dead letters older than this are deleted (oldest first, logged and counted). */
    readonly deadLetterRetentionDays: number
    /** Past this much dead-letter data the oldest dead letters are deleted. */
    readonly deadLetterMaxBytes: number
    /** The longest an HTTP request may take to arrive, body included; slower ones are answered 408 and closed. */
    readonly requestTimeoutMs: number
    /** Room kept back on the SQLite queue's disk, released when the disk fills so delivery can free more. */
    readonly diskReserveBytes: number
  }
  readonly shutdownGraceMs: number
  /** The live status page at /status (off unless enabled: it shows traffic figures, never secrets). */
  readonly statusPage: { readonly enabled: boolean }
  readonly sources: readonly SourceConfig[]
}

/** Webhook tokens shorter than this are refused: the token is the webhook's only protection. */
export const MIN_WEBHOOK_TOKEN_LENGTH = 24

export {
  DEFAULTS,
  NUMERIC_SETTINGS,
  RelayConfigSchema,
  type NumericSetting,
  type RelayConfigFile
} from './config-schema'

/** Why a numeric setting's value is refused, or undefined when it is a whole number within its range. */
export function checkNumber(key: NumericSetting, value: unknown): string | undefined {
  const { min, max, unit } = NUMERIC_SETTINGS[key]
  if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return undefined
  return `must be a whole number from ${min} to ${max}, ${unit}${typeof value === 'number' ? ` (got ${value})` : ''}`
}

type Json = Record<string, unknown>
/** The stand-in an admin command gets for a credential it does not need (see parseConfig's `queueOnly`). */
const UNSET_PREFIX = 'unset_'
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)

/** A stable id for a project key that is safe to log and store. */
export function projectIdOf(projectApiKey: string): string {
  return createHash('sha256').update(projectApiKey).digest('hex').slice(0, 12)
}

/** The queue lane of a Segment destination: never equal to a 1Flow project id (those are bare hex). */
export function segmentLaneOf(writeKey: string, host: string): string {
  return `segment-${createHash('sha256').update(`${host}\u0000${writeKey}`).digest('hex').slice(0, 12)}`
}

/**
 * The name of each queue lane, as metrics, /health, the status page and the CLI show it: the (first) source's
 * name for a 1Flow project, `segment:<source>` for its survey responses. A lane whose credential an admin command
 * did not have (`queueOnly`) cannot be named from the config, and is left out.
 */
export function laneLabels(config: Pick<RelayConfig, 'sources'>): Map<string, string> {
  const labels = new Map<string, string>()
  for (const source of config.sources) {
    if (!source.projectApiKey.startsWith(UNSET_PREFIX) && !labels.has(source.projectId))
      labels.set(source.projectId, source.name)
    if (source.segment && !source.segment.writeKey.startsWith(UNSET_PREFIX) && !labels.has(source.segment.laneId))
      labels.set(source.segment.laneId, `segment:${source.name}`)
  }
  return labels
}

/** Query parameters of a PostgreSQL URL that carry a secret (libpq's password, sslpassword, and anything named so). */
const SECRET_PARAM = /pass|secret|token|key/i

/**
 * The queue setting as it may be shown: a PostgreSQL URL's password replaced by "***", wherever it is given
 * (`user:password@`, `?password=`, `?sslpassword=`). A URL that cannot be read is shown only by its scheme.
 */
export function displayQueue(queue: string): string {
  if (!/^postgres(ql)?:\/\//i.test(queue)) return queue
  let url: URL
  try {
    url = new URL(queue)
  } catch {
    return `${queue.slice(0, queue.indexOf('://') + 3)}*** (not a valid URL)`
  }
  if (url.password) url.password = '***'
  for (const key of [...url.searchParams.keys()]) if (SECRET_PARAM.test(key)) url.searchParams.set(key, '***')
  return url.toString().replace(/%2A%2A%2A/g, '***')
}

/**
 * Validates a parsed config object, applies defaults and resolves `env:NAME` secrets from `env`. Every
 * problem is reported at once, each naming its key; a secret's value never appears in a message.
 */
export function parseConfig(
  raw: unknown,
  options: {
    env?: NodeJS.ProcessEnv
    baseDir?: string
    /**
     * For the admin commands (dlq, stats), which read only the queue: credentials (write keys, project keys,
     * webhook tokens) that are `env:NAME` with NAME not set are not required. The queue's own setting still is.
     */
    queueOnly?: boolean
  } = {}
): RelayConfig {
  const env = options.env ?? process.env
  const problems: Array<{ key: string; message: string }> = []
  const fail = (key: string, message: string) => problems.push({ key, message })
  if (!isObject(raw)) throw new ConfigError([{ key: '(root)', message: 'the config must be a JSON object' }])

  const known = new Set(CONFIG_SECTIONS.root)
  for (const key of Object.keys(raw))
    if (!known.has(key))
      fail(key, `unknown key; expected one of ${[...known].filter((k) => k !== '$schema').join(', ')}`)

  /** An optional object section; every key it has must be one of `keys` (a typo is reported, never ignored). */
  const section = (key: string, keys: readonly string[]): Json => {
    const v = raw[key]
    if (v === undefined) return {}
    if (!isObject(v)) {
      fail(key, 'must be an object')
      return {}
    }
    for (const k of Object.keys(v))
      if (!keys.includes(k)) fail(`${key}.${k}`, `unknown key; expected ${keys.join(', ')}`)
    return v
  }
  /** A numeric setting at `path` (`section.key`), checked against NUMERIC_SETTINGS; the default when absent. */
  const num = (obj: Json, path: NumericSetting, fallback: number): number => {
    const v = obj[path.slice(path.lastIndexOf('.') + 1)]
    if (v === undefined) return fallback
    const problem = checkNumber(path, v)
    if (problem) {
      fail(path, problem)
      return fallback
    }
    return v as number
  }
  const secret = (obj: Json, key: string, path: string): string => {
    const v = obj[key]
    if (typeof v !== 'string' || v.trim() === '') {
      fail(path, 'is required (a string, or "env:NAME" to read it from the environment variable NAME)')
      return ''
    }
    if (v.startsWith('env:')) {
      const name = v.slice(4)
      const value = env[name]
      if (value === undefined || value.trim() === '') {
        // An admin command does not use it: a stand-in nobody can send with (it never leaves the process), in
        // a form every credential check takes (24+ URL-safe characters, one per variable).
        if (options.queueOnly && path !== 'queue') return `${UNSET_PREFIX}${name}_`.padEnd(32, '0')
        fail(path, `reads the environment variable ${name}, which is not set`)
      }
      return value?.trim() ?? ''
    }
    return v.trim()
  }
  /**
   * A setting given as "env:NAME" (PORT and HOST on most platforms, any other setting where a platform sets
   * it): read from the environment, as the type the setting has (a whole number, true/false, or text).
   */
  const fromEnv = (obj: Json, key: string, path: string): void => {
    const v = obj[key]
    if (typeof v !== 'string' || !v.startsWith('env:')) return
    const name = v.slice(4)
    const value = env[name]?.trim()
    delete obj[key]
    if (value === undefined || value === '') {
      // An admin command never listens nor sends: the default stands in.
      if (!options.queueOnly) fail(path, `reads the environment variable ${name}, which is not set`)
    } else if (path in NUMERIC_SETTINGS) {
      if (/^\d+$/.test(value)) obj[key] = Number(value)
      else
        fail(
          path,
          key === 'port'
            ? `reads ${name}, whose value is not a port number (a whole number from 1 to 65535)`
            : `reads ${name}, whose value is not a whole number`
        )
    } else if (path === 'statusPage.enabled') {
      if (value === 'true' || value === 'false') obj[key] = value === 'true'
      else fail(path, `reads ${name}, whose value must be true or false`)
    } else obj[key] = value
  }
  /** Every "env:NAME" value of a section, resolved (a section that is not an object is reported by `section`). */
  const sectionFromEnv = (key: string, obj: Json): Json => {
    const copy = { ...obj }
    for (const k of Object.keys(copy)) fromEnv(copy, k, `${key}.${k}`)
    return copy
  }

  const listen = sectionFromEnv('listen', section('listen', CONFIG_SECTIONS.listen))
  if (isObject(listen.ops)) listen.ops = sectionFromEnv('listen.ops', listen.ops)
  const host = listen.host ?? DEFAULTS.listen.host
  if (typeof host !== 'string' || host === '') fail('listen.host', 'must be a host name or address, e.g. "127.0.0.1"')
  const port = num(listen, 'listen.port', DEFAULTS.listen.port)
  let ops: { host: string; port: number } | undefined
  if (listen.ops !== undefined) {
    if (!isObject(listen.ops)) fail('listen.ops', 'must be an object {"host": "127.0.0.1", "port": 9090}')
    else {
      for (const k of Object.keys(listen.ops))
        if (!CONFIG_SECTIONS['listen.ops'].includes(k))
          fail(`listen.ops.${k}`, `unknown key; expected ${CONFIG_SECTIONS['listen.ops'].join(', ')}`)
      const opsHost = listen.ops.host ?? host
      if (typeof opsHost !== 'string' || opsHost === '')
        fail('listen.ops.host', 'must be a host name or address, e.g. "127.0.0.1"')
      // (An admin command never listens: an unset env:NAME for it is fine there.)
      if (listen.ops.port === undefined && !options.queueOnly)
        fail('listen.ops.port', 'is required: the port health, metrics and the status page listen on')
      const opsPort = num(listen.ops, 'listen.ops.port', 0)
      if (opsPort !== 0 && opsPort === port && opsHost === host)
        fail('listen.ops.port', 'must differ from listen.port: the ops endpoints get a listener of their own')
      ops = { host: String(opsHost), port: opsPort }
    }
  }

  // The queue may be a PostgreSQL URL with a password: "env:NAME" reads it from the environment.
  let queue: unknown = raw.queue ?? DEFAULTS.queue
  if (typeof queue === 'string' && queue.startsWith('env:')) queue = secret(raw, 'queue', 'queue')
  if (typeof queue !== 'string' || !/^(sqlite:.+|postgres(ql)?:\/\/.+)$/.test(queue)) {
    if (queue !== '')
      fail(
        'queue',
        'must be "sqlite:<path>" (e.g. "sqlite:./data/relay.db"), a "postgres://…" URL, or "env:NAME" holding one'
      )
    queue = DEFAULTS.queue
  } else if (!queue.startsWith('sqlite:') && !URL.canParse(queue)) {
    // pg would fail on it at every connection attempt, and the relay answer 503 for ever.
    fail(
      'queue',
      'is not a valid URL: a password with / # ? @ % or : must be percent-encoded (or left out of the URL and given in PGPASSWORD)'
    )
  }
  if ((queue as string).startsWith('sqlite:')) {
    const path = (queue as string).slice('sqlite:'.length)
    queue = `sqlite:${isAbsolute(path) ? path : resolve(options.baseDir ?? process.cwd(), path)}`
  }

  const oneflow = sectionFromEnv('oneflow', section('oneflow', CONFIG_SECTIONS.oneflow))
  const apiBaseUrl = oneflow.apiBaseUrl ?? DEFAULTS.oneflow.apiBaseUrl
  if (typeof apiBaseUrl !== 'string' || !/^https?:\/\/[^\s/]+/.test(apiBaseUrl))
    fail('oneflow.apiBaseUrl', `must be an http(s) URL such as ${DEFAULT_API_BASE_URL}`)
  const mode = oneflow.mode ?? DEFAULTS.oneflow.mode
  if (mode !== 'batch' && mode !== 'single')
    fail('oneflow.mode', 'must be "batch" (POST /batch, up to 480 KB a request) or "single" (one request per event)')
  const oneflowConfig = {
    apiBaseUrl: String(apiBaseUrl).replace(/\/+$/, ''),
    mode: mode === 'single' ? ('single' as const) : ('batch' as const),
    maxRequestsPerSecond: num(oneflow, 'oneflow.maxRequestsPerSecond', DEFAULTS.oneflow.maxRequestsPerSecond),
    concurrency: num(oneflow, 'oneflow.concurrency', DEFAULTS.oneflow.concurrency),
    requestTimeoutMs: num(oneflow, 'oneflow.requestTimeoutMs', DEFAULTS.oneflow.requestTimeoutMs)
  }

  const limits = sectionFromEnv('limits', section('limits', CONFIG_SECTIONS.limits))
  const limitsConfig = Object.fromEntries(
    (Object.keys(DEFAULTS.limits) as Array<keyof typeof DEFAULTS.limits>).map((key) => [
      key,
      num(limits, `limits.${key}`, DEFAULTS.limits[key])
    ])
  ) as unknown as RelayConfig['limits']
  const statusPage = sectionFromEnv('statusPage', section('statusPage', CONFIG_SECTIONS.statusPage))
  if (statusPage.enabled !== undefined && typeof statusPage.enabled !== 'boolean')
    fail('statusPage.enabled', 'must be true or false')
  const top = { ...raw }
  fromEnv(top, 'shutdownGraceMs', 'shutdownGraceMs')
  const shutdownGraceMs = num(top, 'shutdownGraceMs', DEFAULTS.shutdownGraceMs)

  const sources: SourceConfig[] = []
  if (!Array.isArray(raw.sources) || raw.sources.length === 0) {
    fail('sources', 'must list at least one source: [{"writeKey": "…", "projectApiKey": "…"}]')
  } else {
    const writeKeys = new Set<string>()
    const names = new Set<string>()
    raw.sources.forEach((s: unknown, i: number) => {
      const at = `sources[${i}]`
      if (!isObject(s)) return fail(at, 'must be an object {"writeKey": "…", "projectApiKey": "…", "mappings"?: […]}')
      const sourceKeys = CONFIG_SECTIONS.source
      for (const key of Object.keys(s))
        if (!sourceKeys.includes(key)) fail(`${at}.${key}`, `unknown key; expected ${sourceKeys.join(', ')}`)
      const name = s.name ?? `source-${i + 1}`
      if (typeof name !== 'string' || !/^[\w.-]{1,64}$/.test(name))
        fail(`${at}.name`, 'must be 1–64 letters, digits, "_", "-" or "."')
      else if (names.has(name))
        fail(
          `${at}.name`,
          `"${name}" is used by another source; names must be unique (they appear in webhook URLs, logs and dead letters)`
        )
      if (typeof name === 'string') names.add(name)
      const writeKey = secret(s, 'writeKey', `${at}.writeKey`)
      if (writeKey && writeKeys.has(writeKey))
        fail(`${at}.writeKey`, 'is used by another source; each write key routes to one 1Flow project')
      writeKeys.add(writeKey)
      const projectApiKey = secret(s, 'projectApiKey', `${at}.projectApiKey`)
      let subscriptions: CompiledSubscription[] | undefined
      if (s.mappings !== undefined) {
        try {
          subscriptions = compileSubscriptions(s.mappings as Subscription[])
        } catch (error) {
          if (!(error instanceof InvalidSubscriptionError)) throw error
          for (const p of error.problems)
            fail(p.index >= 0 ? `${at}.mappings[${p.index}]` : `${at}.mappings`, p.message)
        }
      }
      let consentCategories: readonly string[] = []
      try {
        consentCategories = resolveSettings({
          projectApiKey: 'unused',
          consentCategories: s.consentCategories
        }).consentCategories
      } catch (error) {
        if (!(error instanceof InvalidSettingsError)) throw error
        fail(`${at}.consentCategories`, 'must be a list of consent category ids, such as ["Analytics"]')
      }
      const webhook = parseWebhook(s, at, secret, fail, fromEnv)
      sources.push({
        name: String(name),
        writeKey,
        projectApiKey,
        projectId: projectIdOf(projectApiKey),
        ...(subscriptions && { subscriptions }),
        consentCategories,
        ...webhook
      })
    })
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return {
    listen: { host: String(host), port, ...(ops && { ops }) },
    queue: queue as string,
    oneflow: oneflowConfig,
    limits: limitsConfig,
    shutdownGraceMs,
    statusPage: { enabled: statusPage.enabled === true },
    sources
  }
}

/**
 * The 1Flow → Segment direction of a source: `webhookToken` (the secret in the URL 1Flow calls) and
 * `segment` {writeKey, host?, eventName?} come together; one without the other is explained.
 */
function parseWebhook(
  s: Json,
  at: string,
  secret: (obj: Json, key: string, path: string) => string,
  fail: (key: string, message: string) => void,
  fromEnv: (obj: Json, key: string, path: string) => void
): { webhookToken?: string; segment?: SegmentTarget } {
  if (s.webhookToken === undefined && s.segment === undefined) return {}
  if (s.segment === undefined) {
    fail(
      `${at}.segment`,
      'is required with webhookToken: {"writeKey": "…"} of the Segment source that receives 1Flow survey responses'
    )
    return {}
  }
  if (s.webhookToken === undefined) {
    fail(
      `${at}.webhookToken`,
      `is required with segment: the secret in the webhook URL you give 1Flow (at least ${MIN_WEBHOOK_TOKEN_LENGTH} characters, e.g. from \`openssl rand -hex 24\`)`
    )
  }
  let webhookToken: string | undefined
  if (s.webhookToken !== undefined) {
    webhookToken = secret(s, 'webhookToken', `${at}.webhookToken`)
    if (webhookToken && (webhookToken.length < MIN_WEBHOOK_TOKEN_LENGTH || !/^[\w.~-]+$/.test(webhookToken))) {
      fail(
        `${at}.webhookToken`,
        `must be at least ${MIN_WEBHOOK_TOKEN_LENGTH} letters, digits, "_", "-", "." or "~" (it goes in a URL), e.g. from \`openssl rand -hex 24\``
      )
    }
  }
  if (!isObject(s.segment)) {
    fail(`${at}.segment`, 'must be an object {"writeKey": "…", "host"?: "…", "eventName"?: "…"}')
    return {}
  }
  const seg = { ...s.segment }
  fromEnv(seg, 'host', `${at}.segment.host`)
  fromEnv(seg, 'eventName', `${at}.segment.eventName`)
  for (const key of Object.keys(seg))
    if (!CONFIG_SECTIONS['source.segment'].includes(key))
      fail(`${at}.segment.${key}`, `unknown key; expected ${CONFIG_SECTIONS['source.segment'].join(', ')}`)
  const writeKey = secret(seg, 'writeKey', `${at}.segment.writeKey`)
  const host = seg.host ?? SEGMENT_DEFAULT_HOST
  if (typeof host !== 'string' || !/^https?:\/\/[^\s/]+(\/[^\s]*)?$/.test(host)) {
    fail(
      `${at}.segment.host`,
      `must be an http(s) URL such as ${SEGMENT_DEFAULT_HOST} (or https://events.eu1.segmentapis.com for EU workspaces), without /v1`
    )
  }
  const eventName = seg.eventName ?? SURVEY_RESPONSE_EVENT
  if (typeof eventName !== 'string' || eventName.trim() === '' || eventName.length > 200)
    fail(`${at}.segment.eventName`, 'must be a non-empty event name (at most 200 characters)')
  const base = String(host).replace(/\/+$/, '').replace(/\/v1$/, '')
  return {
    ...(webhookToken && { webhookToken }),
    segment: { writeKey, host: base, eventName: String(eventName), laneId: segmentLaneOf(writeKey, base) }
  }
}

/** Reads and validates a config file; relative paths in it are relative to the file. */
export function loadConfig(
  file: string,
  env: NodeJS.ProcessEnv = process.env,
  options: { queueOnly?: boolean } = {}
): RelayConfig {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    throw new ConfigError([
      {
        key: '(file)',
        message: `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`
      }
    ])
  }
  // Editors on Windows may start the file with a byte order mark.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    // JSON.parse's message quotes the file ("…, "{"writeKey": abc…" is not valid JSON"), which may hold secrets:
    // say only where the problem is.
    throw new ConfigError([{ key: '(file)', message: `${file} is not valid JSON: ${jsonSyntaxError(text)}` }])
  }
  return parseConfig(raw, { env, baseDir: dirname(resolve(file)), ...options })
}

/** Where jsonSyntaxError's walk stopped, and why. */
class JsonSyntaxProblem extends OneFlowError {
  override readonly name = 'JsonSyntaxProblem'
  readonly code = 'JSON_SYNTAX'
  readonly remedy = 'fix-config'
}

/** Where a JSON text first breaks the grammar, as "what at line L, column C", never quoting the text. */
export function jsonSyntaxError(text: string): string {
  let i = 0
  const fail = (what: string): never => {
    throw new JsonSyntaxProblem(what)
  }
  const space = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i] as string)) i++
  }
  const literal = (word: string) =>
    text.startsWith(word, i) ? void (i += word.length) : fail('an unexpected character')
  const string = () => {
    i++
    for (;;) {
      if (i >= text.length) fail('a string that never ends')
      const c = text[i] as string
      if (c === '"') return void i++
      if (c < ' ') fail('a control character inside a string')
      if (c === '\\') {
        const e = text[i + 1] ?? ''
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail('a bad \\u escape')
          i += 6
        } else if ('"\\/bfnrt'.includes(e) && e !== '') i += 2
        else fail('a bad escape in a string')
      } else i++
    }
  }
  const value = (depth: number): void => {
    if (depth > 512) fail('nesting deeper than 512 levels')
    space()
    const c = text[i]
    if (c === undefined) fail('an unexpected end')
    if (c === '{') {
      i++
      space()
      if (text[i] === '}') return void i++
      for (;;) {
        space()
        if (text[i] !== '"')
          fail(text[i] === undefined ? 'an unexpected end' : 'a property name that is not a double-quoted string')
        string()
        space()
        if (text[i] !== ':') fail("a missing ':' after a property name")
        i++
        value(depth + 1)
        space()
        if (text[i] === ',') {
          i++
          space()
          if (text[i] === '}') fail("a ',' before '}' (trailing commas are not JSON)")
          continue
        }
        if (text[i] === '}') return void i++
        fail(text[i] === undefined ? 'an unexpected end' : "a missing ',' or '}' after a value")
      }
    }
    if (c === '[') {
      i++
      space()
      if (text[i] === ']') return void i++
      for (;;) {
        value(depth + 1)
        space()
        if (text[i] === ',') {
          i++
          space()
          if (text[i] === ']') fail("a ',' before ']' (trailing commas are not JSON)")
          continue
        }
        if (text[i] === ']') return void i++
        fail(text[i] === undefined ? 'an unexpected end' : "a missing ',' or ']' after a value")
      }
    }
    if (c === '"') return string()
    if (c === 't') return literal('true')
    if (c === 'f') return literal('false')
    if (c === 'n') return literal('null')
    const number = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400))
    if (!number) fail('an unexpected character')
    i += (number as RegExpExecArray)[0].length
  }
  try {
    if (text.charCodeAt(0) === 0xfeff) i = 1
    value(0)
    space()
    if (i < text.length) fail('more after the end of the JSON value')
    return 'a syntax error'
  } catch (error) {
    if (!(error instanceof JsonSyntaxProblem)) throw error
    const before = text.slice(0, i)
    const line = before.split('\n').length
    const column = i - before.lastIndexOf('\n')
    return `${(error as Error).message} at line ${line}, column ${column}`
  }
}
