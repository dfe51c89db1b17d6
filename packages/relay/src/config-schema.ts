/**
 * The relay config file's shape, written once: the JSON Schema editors read (`relay-config.schema.json`, made
 * from this by `pnpm --filter @oneflow-seg/relay schema`), the `RelayConfigFile` type for configs written in
 * TypeScript, and the keys `parseConfig` accepts in each section. The values' rules — ranges, URLs, the
 * cross-field ones (a webhook token needs its Segment target, write keys unique) and their messages — are
 * parseConfig's; the schema carries the ranges too, so an editor flags a value before check-config does.
 */
import { ONEFLOW_LIMITS, DEFAULT_API_BASE_URL } from '@oneflow-seg/core'
import { Type, type Static, type TObject, type TSchema } from '@sinclair/typebox'

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
    requestTimeoutMs: 30_000,
    diskReserveBytes: 16 * 1024 ** 2
  },
  shutdownGraceMs: 25_000
}

/**
 * Every numeric setting: a whole number within its range, and the unit a message names. A value outside it
 * would be accepted and then deliver nothing (0.5 requests/s rounds down to none), so check-config refuses it.
 */
export const NUMERIC_SETTINGS = {
  'listen.port': { min: 0, max: 65_535, unit: '(0: any free port)' },
  'listen.ops.port': { min: 0, max: 65_535, unit: '(0: any free port)' },
  'oneflow.maxRequestsPerSecond': {
    min: 1,
    max: ONEFLOW_LIMITS.maxRequestsPerSecond,
    unit: 'requests/s per 1Flow project (1Flow asks for at most 500)'
  },
  'oneflow.concurrency': { min: 1, max: 64, unit: 'requests in flight per project' },
  'oneflow.requestTimeoutMs': { min: 100, max: 600_000, unit: 'milliseconds' },
  'limits.diskCapBytes': { min: 1024 ** 2, max: 1024 ** 5, unit: 'bytes (1 MiB to 1 PiB)' },
  'limits.dedupWindowHours': { min: 24, max: 8760, unit: 'hours (Segment keeps message ids for 24 h)' },
  'limits.giveUpAfterHours': { min: 1, max: 720, unit: 'hours' },
  'limits.deadLetterRetentionDays': { min: 1, max: 3650, unit: 'days' },
  'limits.deadLetterMaxBytes': { min: 1024 ** 2, max: 1024 ** 5, unit: 'bytes (1 MiB to 1 PiB)' },
  'limits.requestTimeoutMs': { min: 1000, max: 600_000, unit: 'milliseconds' },
  'limits.diskReserveBytes': {
    min: 0,
    max: 1024 ** 4,
    unit: 'bytes kept free on the SQLite disk to recover from a full disk (0: none)'
  },
  shutdownGraceMs: { min: 1000, max: 25_000, unit: 'milliseconds' }
} as const satisfies Record<string, { min: number; max: number; unit: string }>

export type NumericSetting = keyof typeof NUMERIC_SETTINGS

const EnvRef = Type.String({
  pattern: '^env:[A-Za-z_][A-Za-z0-9_]*$',
  description: '"env:NAME": read from the environment variable NAME'
})
/** Any setting may be "env:NAME" instead of its value. */
const orEnv = <T extends TSchema>(schema: T) => Type.Union([schema, EnvRef])
const whole = (key: NumericSetting, description: string, fallback?: number) => {
  const { min, max, unit } = NUMERIC_SETTINGS[key]
  return Type.Optional(
    orEnv(
      Type.Integer({
        minimum: min,
        maximum: max,
        description: `${description}: ${min}–${max} ${unit}`,
        ...(fallback !== undefined && { default: fallback })
      })
    )
  )
}
const text = (description: string, extra: Record<string, unknown> = {}) =>
  Type.Optional(orEnv(Type.String({ minLength: 1, description, ...extra })))
const secret = (description: string) =>
  orEnv(Type.String({ minLength: 1, description: `${description} (better as "env:NAME" than written here)` }))
const closed = <T extends Parameters<typeof Type.Object>[0]>(properties: T, description: string) =>
  Type.Object(properties, { additionalProperties: false, description })

const Listen = closed(
  {
    host: text('the address the ingest API (and ops endpoints) listen on', { default: DEFAULTS.listen.host }),
    port: whole('listen.port', 'the port', DEFAULTS.listen.port),
    ops: Type.Optional(
      closed(
        {
          host: text('the ops listener address (default: listen.host)'),
          port: orEnv(Type.Integer({ minimum: 0, maximum: 65_535, description: 'the ops listener port' }))
        },
        'health, metrics and the status page on a listener of their own (then not on the ingest port)'
      )
    )
  },
  'where the relay listens'
)

const OneFlow = closed(
  {
    apiBaseUrl: text("1Flow's HTTP API (or a proxy)", {
      default: DEFAULTS.oneflow.apiBaseUrl,
      pattern: '^https?://[^\\s/]+'
    }),
    mode: Type.Optional(
      orEnv(
        Type.Union([Type.Literal('batch'), Type.Literal('single')], {
          default: DEFAULTS.oneflow.mode,
          description: 'batch: POST /batch of up to 480 KB; single: one request per event'
        })
      )
    ),
    maxRequestsPerSecond: whole(
      'oneflow.maxRequestsPerSecond',
      'requests per second per 1Flow project',
      DEFAULTS.oneflow.maxRequestsPerSecond
    ),
    concurrency: whole('oneflow.concurrency', 'requests in flight per project', DEFAULTS.oneflow.concurrency),
    requestTimeoutMs: whole('oneflow.requestTimeoutMs', 'per-request timeout', DEFAULTS.oneflow.requestTimeoutMs)
  },
  'delivery to 1Flow'
)

const Limits = closed(
  {
    diskCapBytes: whole(
      'limits.diskCapBytes',
      'past this much live data ingest answers 503',
      DEFAULTS.limits.diskCapBytes
    ),
    dedupWindowHours: whole(
      'limits.dedupWindowHours',
      'how long a messageId is remembered',
      DEFAULTS.limits.dedupWindowHours
    ),
    giveUpAfterHours: whole(
      'limits.giveUpAfterHours',
      'retrying longer than this dead-letters the event',
      DEFAULTS.limits.giveUpAfterHours
    ),
    deadLetterRetentionDays: whole(
      'limits.deadLetterRetentionDays',
      'dead letters older than this are removed',
      DEFAULTS.limits.deadLetterRetentionDays
    ),
    deadLetterMaxBytes: whole(
      'limits.deadLetterMaxBytes',
      'past this, the oldest dead letters are removed',
      DEFAULTS.limits.deadLetterMaxBytes
    ),
    requestTimeoutMs: whole(
      'limits.requestTimeoutMs',
      'a request must arrive whole within this',
      DEFAULTS.limits.requestTimeoutMs
    ),
    diskReserveBytes: whole(
      'limits.diskReserveBytes',
      'room kept back on the SQLite disk',
      DEFAULTS.limits.diskReserveBytes
    )
  },
  'queue and request limits'
)

const Mapping = Type.Object(
  {
    name: Type.Optional(Type.String()),
    subscribe: Type.String({ description: 'a Segment subscription query, e.g. type = "track"' }),
    partnerAction: Type.String({ description: 'trackEvent or identifyUser' }),
    enabled: Type.Optional(Type.Boolean()),
    mapping: Type.Optional(Type.Record(Type.String(), Type.Unknown()))
  },
  { description: 'a Segment subscription: which events, to which 1Flow action, with which fields' }
)

const SegmentTarget = closed(
  {
    writeKey: secret('the write key of the Segment source that receives 1Flow survey responses'),
    host: text("Segment's Tracking API, without /v1", {
      default: 'https://api.segment.io',
      pattern: '^https?://[^\\s/]+'
    }),
    eventName: text('the event survey responses become', { default: 'Survey Response Submitted', maxLength: 200 })
  },
  '1Flow survey responses → Segment'
)

const Source = closed(
  {
    name: Type.Optional(
      Type.String({ pattern: '^[\\w.-]{1,64}$', description: 'unique; in logs, metrics, webhook URLs, dead letters' })
    ),
    writeKey: secret('the Segment write key clients send with (routes events to this source)'),
    projectApiKey: secret("this source's 1Flow project API key"),
    mappings: Type.Optional(Type.Array(Mapping, { description: 'Segment subscriptions; default: the presets' })),
    consentCategories: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), { description: 'events need these consent categories to be sent' })
    ),
    webhookToken: Type.Optional(
      orEnv(
        Type.String({
          pattern: '^[\\w.~-]{24,}$',
          description:
            'the secret in the URL 1Flow\'s survey-response webhook calls: 24+ letters, digits, _ - . ~ (better as "env:NAME")'
        })
      )
    ),
    segment: Type.Optional(SegmentTarget)
  },
  'a Segment source and the 1Flow project it feeds'
)

export const RelayConfigSchema = Type.Object(
  {
    $schema: Type.Optional(Type.String()),
    listen: Type.Optional(Listen),
    queue: text('sqlite:<path> (relative to the config file) or postgres://…', {
      default: DEFAULTS.queue,
      pattern: '^(sqlite:.+|postgres(ql)?://.+|env:[A-Za-z_][A-Za-z0-9_]*)$'
    }),
    oneflow: Type.Optional(OneFlow),
    limits: Type.Optional(Limits),
    shutdownGraceMs: whole('shutdownGraceMs', 'how long SIGTERM may take', DEFAULTS.shutdownGraceMs),
    statusPage: Type.Optional(
      closed(
        { enabled: Type.Optional(orEnv(Type.Boolean({ default: false, description: 'serve /status' }))) },
        'the live status page'
      )
    ),
    sources: Type.Array(Source, { minItems: 1 })
  },
  {
    $id: 'https://github.com/oneflow-seg/oneflow-seg/blob/main/packages/relay/relay-config.schema.json',
    title: 'oneflow-relay config',
    additionalProperties: false
  }
)

/** A config file as written (before defaults and `env:` values): for configs written in TypeScript. */
export type RelayConfigFile = Static<typeof RelayConfigSchema>

/** The keys a section of the config may have, from the schema. */
export const keysOf = (schema: TObject): string[] => Object.keys(schema.properties)
export const CONFIG_SECTIONS = {
  root: keysOf(RelayConfigSchema),
  listen: keysOf(Listen),
  'listen.ops': keysOf(Listen.properties.ops),
  oneflow: keysOf(OneFlow),
  limits: keysOf(Limits),
  statusPage: keysOf(RelayConfigSchema.properties.statusPage),
  source: keysOf(Source),
  'source.segment': keysOf(SegmentTarget)
} as const

/** The schema as JSON (what relay-config.schema.json holds). */
export function relayConfigJsonSchema(): Record<string, unknown> {
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    ...(JSON.parse(JSON.stringify(RelayConfigSchema)) as object)
  }
}
