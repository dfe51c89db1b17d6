/** Fixture types and JSON reviving, with no Node imports so that browser test pages can use them too. */

export type SdkCall =
  readonly ['logUser', string, Record<string, unknown>] | readonly ['logEvent', string, Record<string, unknown>]

export type ExpectedHttp =
  | { readonly path: '/identify' | '/track'; readonly body: Record<string, unknown> }
  /** The command can never be sent over HTTP (over 1Flow's 32 KB limit). */
  | { readonly error: 'PAYLOAD_TOO_LARGE' }

/** One 1Flow call an event should cause: the web-SDK call (method form) and the HTTP request. */
export interface ExpectedCall {
  readonly sdk: SdkCall
  readonly http: ExpectedHttp
}

export interface FixtureExpectation {
  /** Calls made, in order. */
  readonly calls?: readonly ExpectedCall[]
  /** Skip reasons (nothing sent for these). */
  readonly skipped?: readonly string[]
  /** Invalid payloads, by the field the error names. */
  readonly invalid?: readonly { readonly field: string }[]
  /** The configuration (subscriptions) is refused before any event is processed. */
  readonly configError?: { readonly code: string; readonly includes: readonly string[] }
}

/** A conformance case: a Segment event, optional settings and subscriptions, and what 1Flow should see. */
export interface Fixture {
  readonly name: string
  readonly description: string
  readonly event: Record<string, unknown>
  readonly settings?: Record<string, unknown>
  /** Segment-style subscriptions; absent means the presets. */
  readonly subscriptions?: readonly Record<string, unknown>[]
  readonly expect: FixtureExpectation
  /**
   * What an adapter that answers to another `integrations` name sees instead of `expect` (device mode answers to
   * "1Flow Web (Actions)", cloud mode to "1Flow Cloud (Actions)"; core, the plugin and the relay to "1Flow").
   */
  readonly expectFor?: Readonly<Partial<Record<FixtureAdapter, FixtureExpectation>>>
  /** Per-adapter notes where an adapter expresses the case differently (never a silent skip). */
  readonly adapters?: Readonly<Record<string, string>>
}

/**
 * Adapters that may have an expectation of their own: device and cloud mode answer to other `integrations` names;
 * `browser` is both browser adapters (device mode and the Analytics.js plugin), whose settings differ from the
 * servers' (device-only settings are validated there, cloud-only ones are not read).
 */
export type FixtureAdapter = 'device-mode' | 'cloud-mode' | 'browser'

/** The project key fixtures use unless they set their own settings. */
export const FIXTURE_API_KEY = 'test-project-key'

export interface LoadOptions {
  /** How `{"$date": "…"}` markers load: as Date objects (what analytics.js passes in-process) or as ISO strings (what JSON carries). */
  readonly dates?: 'date' | 'string'
}

/** Expands fixture markers: `{"$repeat": "a", "times": n}` → a string of n "a"s; `{"$date": iso}` → a Date or its ISO string. */
export function reviveFixtureJson(text: string, options: LoadOptions = {}): unknown {
  return JSON.parse(text, (_key, value: unknown) => {
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
      const v = value as Record<string, unknown>
      if (typeof v.$repeat === 'string' && typeof v.times === 'number') return v.$repeat.repeat(v.times)
      if (typeof v.$date === 'string') return options.dates === 'string' ? v.$date : new Date(v.$date)
    }
    return value
  })
}
