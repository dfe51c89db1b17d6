import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import {
  DEFAULT_API_BASE_URL,
  InvalidSubscriptionError,
  ONEFLOW_LIMITS,
  OneFlowError,
  SEGMENT_DEFAULT_HOST,
  SURVEY_RESPONSE_EVENT,
  type Subscription
} from '@oneflow-seg/core'
import { compileSubscriptions, type CompiledSubscription } from '@oneflow-seg/core/mapping'

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
  readonly listen: { readonly host: string; readonly port: number }
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
  }
  readonly shutdownGraceMs: number
  /** The live status page at /status (off unless enabled: it shows traffic figures, never secrets). */
  readonly statusPage: { readonly enabled: boolean }
  readonly sources: readonly SourceConfig[]
}

/** Webhook tokens shorter than this are refused: the token is the webhook's only protection. */
export const MIN_WEBHOOK_TOKEN_LENGTH = 24

export const DEFAULTS = {
  listen: { host: '127.0.0.1', port: 8787 },
  queue: 'sqlite:./data/relay.db',
  oneflow: {
    apiBaseUrl: DEFAULT_API_BASE_URL,
    mode: 'batch' as const,
    maxRequestsPerSecond: 400,
    concurrency: 8,
    requestTimeoutMs: 10_000
  },
  limits: {
    diskCapBytes: 1024 ** 3,
    dedupWindowHours: 24,
    giveUpAfterHours: 12,
    deadLetterRetentionDays: 14,
    deadLetterMaxBytes: 256 * 1024 ** 2,
    requestTimeoutMs: 30_000
  },
  shutdownGraceMs: 25_000
}

type Json = Record<string, unknown>
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)

/** A stable id for a project key that is safe to log and store. */
export function projectIdOf(projectApiKey: string): string {
  return createHash('sha256').update(projectApiKey).digest('hex').slice(0, 12)
}

/** The queue lane of a Segment destination: never equal to a 1Flow project id (those are bare hex). */
export function segmentLaneOf(writeKey: string, host: string): string {
  return `segment-${createHash('sha256').update(`${host}\u0000${writeKey}`).digest('hex').slice(0, 12)}`
}

/** The queue setting as it may be shown: a PostgreSQL URL's password replaced by "***". */
export function displayQueue(queue: string): string {
  return queue.replace(/^(postgres(?:ql)?:\/\/[^:/?#@]*:)[^@/?#]*@/, '$1***@')
}

/**
 * Validates a parsed config object, applies defaults and resolves `env:NAME` secrets from `env`. Every
 * problem is reported at once, each naming its key; a secret's value never appears in a message.
 */
export function parseConfig(raw: unknown, options: { env?: NodeJS.ProcessEnv; baseDir?: string } = {}): RelayConfig {
  const env = options.env ?? process.env
  const problems: Array<{ key: string; message: string }> = []
  const fail = (key: string, message: string) => problems.push({ key, message })
  if (!isObject(raw)) throw new ConfigError([{ key: '(root)', message: 'the config must be a JSON object' }])

  const known = new Set(['listen', 'queue', 'oneflow', 'limits', 'shutdownGraceMs', 'statusPage', 'sources', '$schema'])
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
  const num = (
    obj: Json,
    key: string,
    path: string,
    fallback: number,
    check: (n: number) => boolean,
    what: string
  ): number => {
    const v = obj[key]
    if (v === undefined) return fallback
    if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) {
      fail(path, `must be ${what}`)
      return fallback
    }
    return v
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
      if (value === undefined || value.trim() === '')
        fail(path, `reads the environment variable ${name}, which is not set`)
      return value?.trim() ?? ''
    }
    return v.trim()
  }

  const listen = section('listen', ['host', 'port'])
  const host = listen.host ?? DEFAULTS.listen.host
  if (typeof host !== 'string' || host === '') fail('listen.host', 'must be a host name or address, e.g. "127.0.0.1"')
  const port = num(
    listen,
    'port',
    'listen.port',
    DEFAULTS.listen.port,
    (n) => Number.isInteger(n) && n >= 0 && n <= 65535,
    'a port number from 0 to 65535'
  )

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
  }
  if ((queue as string).startsWith('sqlite:')) {
    const path = (queue as string).slice('sqlite:'.length)
    queue = `sqlite:${isAbsolute(path) ? path : resolve(options.baseDir ?? process.cwd(), path)}`
  }

  const oneflow = section('oneflow', ['apiBaseUrl', 'mode', 'maxRequestsPerSecond', 'concurrency', 'requestTimeoutMs'])
  const apiBaseUrl = oneflow.apiBaseUrl ?? DEFAULTS.oneflow.apiBaseUrl
  if (typeof apiBaseUrl !== 'string' || !/^https?:\/\/[^\s/]+/.test(apiBaseUrl))
    fail('oneflow.apiBaseUrl', `must be an http(s) URL such as ${DEFAULT_API_BASE_URL}`)
  const mode = oneflow.mode ?? DEFAULTS.oneflow.mode
  if (mode !== 'batch' && mode !== 'single')
    fail('oneflow.mode', 'must be "batch" (POST /batch, up to 480 KB a request) or "single" (one request per event)')
  const oneflowConfig = {
    apiBaseUrl: String(apiBaseUrl).replace(/\/+$/, ''),
    mode: mode === 'single' ? ('single' as const) : ('batch' as const),
    maxRequestsPerSecond: num(
      oneflow,
      'maxRequestsPerSecond',
      'oneflow.maxRequestsPerSecond',
      DEFAULTS.oneflow.maxRequestsPerSecond,
      (n) => n > 0 && n <= ONEFLOW_LIMITS.maxRequestsPerSecond,
      `a number above 0 and at most ${ONEFLOW_LIMITS.maxRequestsPerSecond} (1Flow asks for at most ${ONEFLOW_LIMITS.maxRequestsPerSecond} requests/s)`
    ),
    concurrency: num(
      oneflow,
      'concurrency',
      'oneflow.concurrency',
      DEFAULTS.oneflow.concurrency,
      (n) => Number.isInteger(n) && n >= 1 && n <= 64,
      'a whole number from 1 to 64'
    ),
    requestTimeoutMs: num(
      oneflow,
      'requestTimeoutMs',
      'oneflow.requestTimeoutMs',
      DEFAULTS.oneflow.requestTimeoutMs,
      (n) => n >= 100,
      'at least 100 (milliseconds)'
    )
  }

  const limits = section('limits', Object.keys(DEFAULTS.limits))
  const limit = (key: keyof typeof DEFAULTS.limits, check: (n: number) => boolean, what: string) =>
    num(limits, key, `limits.${key}`, DEFAULTS.limits[key], check, what)
  const limitsConfig = {
    diskCapBytes: limit('diskCapBytes', (n) => n >= 1024 * 1024, 'at least 1048576 (1 MiB)'),
    dedupWindowHours: limit(
      'dedupWindowHours',
      (n) => n >= 24,
      'at least 24 (hours; Segment keeps message ids for 24 h)'
    ),
    giveUpAfterHours: limit('giveUpAfterHours', (n) => n > 0, 'a number of hours above 0'),
    deadLetterRetentionDays: limit('deadLetterRetentionDays', (n) => n > 0, 'a number of days above 0'),
    deadLetterMaxBytes: limit('deadLetterMaxBytes', (n) => n >= 1024 * 1024, 'at least 1048576 (1 MiB)'),
    requestTimeoutMs: limit('requestTimeoutMs', (n) => n >= 1000 && n <= 600_000, 'from 1000 to 600000 (milliseconds)')
  }
  const statusPage = section('statusPage', ['enabled'])
  if (statusPage.enabled !== undefined && typeof statusPage.enabled !== 'boolean')
    fail('statusPage.enabled', 'must be true or false')
  const shutdownGraceMs = num(
    raw,
    'shutdownGraceMs',
    'shutdownGraceMs',
    DEFAULTS.shutdownGraceMs,
    (n) => n >= 1000 && n <= 25_000,
    'from 1000 to 25000 (milliseconds)'
  )

  const sources: SourceConfig[] = []
  if (!Array.isArray(raw.sources) || raw.sources.length === 0) {
    fail('sources', 'must list at least one source: [{"writeKey": "…", "projectApiKey": "…"}]')
  } else {
    const writeKeys = new Set<string>()
    const names = new Set<string>()
    raw.sources.forEach((s: unknown, i: number) => {
      const at = `sources[${i}]`
      if (!isObject(s)) return fail(at, 'must be an object {"writeKey": "…", "projectApiKey": "…", "mappings"?: […]}')
      const sourceKeys = ['name', 'writeKey', 'projectApiKey', 'mappings', 'webhookToken', 'segment']
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
      const webhook = parseWebhook(s, at, secret, fail)
      sources.push({
        name: String(name),
        writeKey,
        projectApiKey,
        projectId: projectIdOf(projectApiKey),
        ...(subscriptions && { subscriptions }),
        ...webhook
      })
    })
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return {
    listen: { host: String(host), port },
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
  fail: (key: string, message: string) => void
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
  const seg = s.segment
  for (const key of Object.keys(seg))
    if (!['writeKey', 'host', 'eventName'].includes(key))
      fail(`${at}.segment.${key}`, 'unknown key; expected writeKey, host, eventName')
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
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): RelayConfig {
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
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (error) {
    throw new ConfigError([{ key: '(file)', message: `${file} is not valid JSON: ${(error as Error).message}` }])
  }
  return parseConfig(raw, { env, baseDir: dirname(resolve(file)) })
}
