import { defineSettings, type PayloadOf } from './field-types.js'
import { InvalidSettingsError } from './errors.js'
import { DEFAULT_API_BASE_URL } from './http-contract.js'
import { DEFAULT_BUFFER_LIMIT } from './pre-ready-buffer.js'

/** How long the browser adapters wait for 1Flow's web SDK unless the settings say otherwise. */
export const DEFAULT_SDK_TIMEOUT_MS = 10_000

/** Where 1Flow's web SDK is served (docs/oneflow-api.md). */
export const DEFAULT_SDK_URL = 'https://1flow.app/js/1flow.js'
export { DEFAULT_API_BASE_URL }

/**
 * Destination settings, shared by every adapter. One project API key serves both 1Flow surfaces: the web SDK's
 * `data-api-key` and the HTTP API's `api_key` header. 1Flow has no region setting (docs/oneflow-api.md).
 */
export const settings = /* @__PURE__ */ defineSettings({
  projectApiKey: {
    label: 'Project API Key',
    description: 'Your 1Flow project API key (1Flow → Settings → Project Settings).',
    type: 'password',
    required: true
  },
  sdkUrl: {
    label: '1Flow SDK URL',
    description: 'Where the 1Flow web SDK is loaded from. Change it only to self-host or proxy the SDK.',
    type: 'string',
    format: 'uri',
    default: DEFAULT_SDK_URL
  },
  loadTimeoutMs: {
    label: 'SDK load timeout (ms)',
    description: "How long to wait for 1Flow's web SDK (1,000–60,000 ms). Events waiting for it are dropped after.",
    type: 'number',
    default: DEFAULT_SDK_TIMEOUT_MS
  },
  bufferLimit: {
    label: 'Events kept while the SDK loads',
    description: "Events kept, in order, until 1Flow's web SDK is ready (1–10,000); more are dropped and logged.",
    type: 'number',
    default: DEFAULT_BUFFER_LIMIT
  },
  apiBaseUrl: {
    label: '1Flow HTTP API base URL',
    description:
      "Base URL of 1Flow's HTTP API, used in cloud mode and by the relay. Change it only to route through a proxy.",
    type: 'string',
    format: 'uri',
    default: DEFAULT_API_BASE_URL
  }
})

export type Settings = PayloadOf<typeof settings>

/** Settings after validation, with every default applied. */
export interface ResolvedSettings {
  readonly projectApiKey: string
  readonly sdkUrl: string
  readonly apiBaseUrl: string
}

/** What the web SDK's adapters need, validated, with defaults applied. */
export interface ResolvedSdkSettings {
  readonly projectApiKey: string
  readonly sdkUrl: string
  readonly loadTimeoutMs: number
  readonly bufferLimit: number
}

const HTTP_URL = /^https?:\/\/[^\s/?#@]+(?:[/?#][^\s]*)?$/i

function optionalUrl(
  input: { readonly sdkUrl?: unknown; readonly apiBaseUrl?: unknown },
  key: 'sdkUrl' | 'apiBaseUrl',
  fallback: string
): string {
  const value = input[key]
  if (value === undefined || value === null || value === '') return fallback
  if (typeof value !== 'string' || !HTTP_URL.test(value.trim())) {
    throw new InvalidSettingsError(
      key,
      `Setting "${key}" must be an http(s) URL such as ${fallback} (or empty for that default).`
    )
  }
  return value.trim()
}

function wholeNumber(input: Record<string, unknown>, key: string, fallback: number, min: number, max: number): number {
  const value = input[key]
  if (value === undefined || value === null || value === '') return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidSettingsError(
      key,
      `Setting "${key}" must be a whole number from ${min} to ${max} (default ${fallback}).`
    )
  }
  return value
}

/** The settings the web SDK needs (key, SDK URL, load deadline, buffer), validated, with defaults applied. */
export function resolveSdkSettings(input: {
  readonly projectApiKey?: unknown
  readonly sdkUrl?: unknown
  readonly loadTimeoutMs?: unknown
  readonly bufferLimit?: unknown
}): ResolvedSdkSettings {
  const key = input.projectApiKey
  if (typeof key !== 'string' || key.trim() === '') {
    throw new InvalidSettingsError(
      'projectApiKey',
      'Setting "projectApiKey" is required: copy it from 1Flow (Settings → Project Settings).'
    )
  }
  return {
    projectApiKey: key.trim(),
    sdkUrl: optionalUrl(input, 'sdkUrl', DEFAULT_SDK_URL),
    loadTimeoutMs: wholeNumber(input, 'loadTimeoutMs', DEFAULT_SDK_TIMEOUT_MS, 1_000, 60_000),
    bufferLimit: wholeNumber(input, 'bufferLimit', DEFAULT_BUFFER_LIMIT, 1, 10_000)
  }
}

/** Validates raw settings and applies defaults; throws InvalidSettingsError naming the bad key (never its value). */
export function resolveSettings(input: unknown): ResolvedSettings {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidSettingsError('settings', 'Settings must be an object such as {"projectApiKey": "…"}.')
  }
  const raw = input as Record<string, unknown>
  const { projectApiKey, sdkUrl } = resolveSdkSettings(raw)
  return {
    projectApiKey,
    sdkUrl,
    apiBaseUrl: optionalUrl(raw, 'apiBaseUrl', DEFAULT_API_BASE_URL).replace(/\/+$/, '')
  }
}
