import { defineSettings, type PayloadOf } from './field-types.js'
import { InvalidSettingsError } from './errors.js'
import { DEFAULT_API_BASE_URL } from './http-contract.js'
import { DEFAULT_BUFFER_LIMIT } from './pre-ready-buffer.js'

/** How long the browser adapters wait for 1Flow's web SDK unless the settings say otherwise. */
export const DEFAULT_SDK_TIMEOUT_MS = 10_000

/** Where 1Flow's web SDK is served (docs/oneflow-api.md). */
export const DEFAULT_SDK_URL = 'https://1flow.app/js/1flow.js'
export { DEFAULT_API_BASE_URL }

// The numeric settings' ranges, written once: on the fields below (what Segment's app shows and checks) and read
// by validation. Plain constants, so that browser start-up code (which validates) carries no field list.
const LOAD_TIMEOUT_MIN = 1_000
const LOAD_TIMEOUT_MAX = 60_000
const BUFFER_MIN = 1
const BUFFER_MAX = 10_000

const projectApiKey = {
  label: 'Project API Key',
  description: 'Your 1Flow project API key (1Flow → Settings → Project Settings).',
  type: 'password',
  required: true
} as const

const consentCategories = {
  label: 'Consent categories',
  description:
    "Consent categories 1Flow needs (the ids your consent manager stamps into context.consent.categoryPreferences, e.g. Analytics). An event whose preferences do not grant all of them is not sent, and in the browser 1Flow's SDK is not loaded before an event grants them. Empty: no consent check.",
  type: 'string',
  multiple: true
} as const

/**
 * Device mode's settings (and the Analytics.js plugin's options): what the web SDK needs. One project API key
 * serves both 1Flow surfaces: the web SDK's `data-api-key` and the HTTP API's `api_key` header. 1Flow has no
 * region setting (docs/oneflow-api.md). Numeric ranges are written here once, and validation reads them.
 */
export const deviceSettings = /* @__PURE__ */ defineSettings({
  projectApiKey,
  sdkUrl: {
    label: '1Flow SDK URL',
    description:
      "Where the 1Flow web SDK is loaded from: an http(s) URL, or a path on your site's own origin (/1flow.js). Change it only to self-host or proxy the SDK.",
    type: 'string',
    format: 'uri-reference',
    default: DEFAULT_SDK_URL
  },
  loadTimeoutMs: {
    label: 'SDK load timeout (ms)',
    description: "How long to wait for 1Flow's web SDK (1,000–60,000 ms). Events waiting for it are dropped after.",
    type: 'number',
    minimum: LOAD_TIMEOUT_MIN,
    maximum: LOAD_TIMEOUT_MAX,
    default: DEFAULT_SDK_TIMEOUT_MS
  },
  bufferLimit: {
    label: 'Events kept while the SDK loads',
    description: "Events kept, in order, until 1Flow's web SDK is ready (1–10,000); more are dropped and logged.",
    type: 'number',
    minimum: BUFFER_MIN,
    maximum: BUFFER_MAX,
    default: DEFAULT_BUFFER_LIMIT
  },
  consentCategories
})

/** Cloud mode's settings (and the relay's, per source): what 1Flow's HTTP API needs. */
export const cloudSettings = /* @__PURE__ */ defineSettings({
  projectApiKey,
  apiBaseUrl: {
    label: '1Flow HTTP API base URL',
    description: "Base URL of 1Flow's HTTP API. Change it only to route through a proxy.",
    type: 'string',
    format: 'uri',
    default: DEFAULT_API_BASE_URL
  },
  consentCategories
})

export type DeviceSettings = PayloadOf<typeof deviceSettings>
export type CloudSettings = PayloadOf<typeof cloudSettings>

/** Cloud mode's settings after validation, with every default applied. */
export interface ResolvedSettings {
  readonly projectApiKey: string
  readonly apiBaseUrl: string
  /** Consent categories an event must grant (none: no consent check). */
  readonly consentCategories: readonly string[]
}

/** What the web SDK's adapters need, validated, with defaults applied. */
export interface ResolvedSdkSettings {
  readonly projectApiKey: string
  readonly sdkUrl: string
  readonly loadTimeoutMs: number
  readonly bufferLimit: number
  readonly consentCategories: readonly string[]
}

const HTTP_URL = /^https?:\/\/[^\s/?#@]+(?:[/?#][^\s]*)?$/i
/** A path on the page's own origin ("/1flow.js"), not a protocol-relative URL ("//cdn…"). */
const SAME_ORIGIN_PATH = /^\/(?!\/)[^\s]*$/

function optionalUrl(value: unknown, key: 'sdkUrl' | 'apiBaseUrl', fallback: string, pathToo: boolean): string {
  if (value === undefined || value === null || value === '') return fallback
  const text = typeof value === 'string' ? value.trim() : ''
  if (!HTTP_URL.test(text) && !(pathToo && SAME_ORIGIN_PATH.test(text))) {
    throw new InvalidSettingsError(
      key,
      `Setting "${key}" must be an http(s) URL${pathToo ? " or a path on the page's own origin" : ''}, such as ${fallback}.`
    )
  }
  return text
}

/** A whole number within the range its setting declares, or its default when empty. */
function wholeNumber(value: unknown, key: string, min: number, max: number, fallback: number): number {
  if (value === undefined || value === null || value === '') return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidSettingsError(
      key,
      `Setting "${key}" must be a whole number from ${min} to ${max} (default ${fallback}).`
    )
  }
  return value
}

/** The consent categories setting: a list of consent category ids (absent: none). */
function categories(value: unknown): readonly string[] {
  if (value == null) return []
  if (!Array.isArray(value) || value.some((c) => typeof c !== 'string' || c.trim() === ''))
    throw new InvalidSettingsError(
      'consentCategories',
      'Setting "consentCategories" must be a list of category ids, such as ["Analytics"].'
    )
  return value.map((c: string) => c.trim())
}

function apiKey(input: Record<string, unknown>): string {
  const key = input.projectApiKey
  if (typeof key !== 'string' || key.trim() === '') {
    throw new InvalidSettingsError(
      'projectApiKey',
      'Setting "projectApiKey" is required: copy it from 1Flow (Settings → Project Settings).'
    )
  }
  return key.trim()
}

function asRecord(input: unknown): Record<string, unknown> {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidSettingsError('settings', 'Settings must be an object such as {"projectApiKey": "…"}.')
  }
  return input as Record<string, unknown>
}

/**
 * Device mode's (and the plugin's) settings — key, SDK URL, load deadline, buffer, consent — validated, with
 * defaults applied. Cloud-only settings (apiBaseUrl) are not read: a bad one never breaks the browser.
 */
export function resolveSdkSettings(input: object): ResolvedSdkSettings {
  const raw = input as Readonly<Record<string, unknown>>
  return {
    projectApiKey: apiKey(raw),
    sdkUrl: optionalUrl(raw.sdkUrl, 'sdkUrl', DEFAULT_SDK_URL, true),
    loadTimeoutMs: wholeNumber(
      raw.loadTimeoutMs,
      'loadTimeoutMs',
      LOAD_TIMEOUT_MIN,
      LOAD_TIMEOUT_MAX,
      DEFAULT_SDK_TIMEOUT_MS
    ),
    bufferLimit: wholeNumber(raw.bufferLimit, 'bufferLimit', BUFFER_MIN, BUFFER_MAX, DEFAULT_BUFFER_LIMIT),
    consentCategories: categories(raw.consentCategories)
  }
}

/**
 * Cloud mode's (and the relay's) settings — key, API base URL, consent — validated, with defaults applied; throws
 * InvalidSettingsError naming the bad key (never its value). Device-only settings (sdkUrl, loadTimeoutMs,
 * bufferLimit) are not read: a bad one never breaks cloud mode.
 */
export function resolveSettings(input: unknown): ResolvedSettings {
  const raw = asRecord(input)
  return {
    projectApiKey: apiKey(raw),
    apiBaseUrl: optionalUrl(raw.apiBaseUrl, 'apiBaseUrl', DEFAULT_API_BASE_URL, false).replace(/\/+$/, ''),
    consentCategories: categories(raw.consentCategories)
  }
}
