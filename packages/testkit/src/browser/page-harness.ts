/**
 * Browser-side helpers for test pages (bundled into the page, never into a published package): deliver a
 * fixture's exact Segment event through a real Analytics.js instance, record what 1Flow's SDK received,
 * what other destinations received, and what was logged on event contexts.
 */
import type { SdkRecord } from '../recording-sdk'

export { reviveFixtureJson, FIXTURE_API_KEY } from '../fixture-json'
export type { Fixture } from '../fixture-json'

/** The parts of analytics-next the helpers use (kept structural so testkit does not depend on it). */
interface ContextLike {
  event: Record<string, unknown>
  log(level: string, message: string, extras?: unknown): void
}

interface AnalyticsLike {
  track(...args: unknown[]): Promise<unknown>
  identify(...args: unknown[]): Promise<unknown>
  page(...args: unknown[]): Promise<unknown>
  group(...args: unknown[]): Promise<unknown>
  alias(...args: unknown[]): Promise<unknown>
  screen?(...args: unknown[]): Promise<unknown>
}

const EVENT_METHODS = ['track', 'identify', 'page', 'group', 'alias', 'screen'] as const

// Fields a fixture controls completely; Analytics.js's own values are removed first. (A messageId is kept
// unless the fixture brings its own: real events always have one.)
const FIXTURE_FIELDS = [
  'userId',
  'anonymousId',
  'traits',
  'properties',
  'event',
  'name',
  'category',
  'integrations',
  'timestamp',
  'groupId',
  'previousId'
]

/**
 * A `before` plugin that replaces the next event's fields with a fixture's, so a fixture's exact event
 * (even one Analytics.js's own API could not produce, such as a track without a name) flows through the
 * real pipeline to the destinations.
 */
export class FixtureInjector {
  private next: Record<string, unknown> | undefined
  readonly plugin: Record<string, unknown>

  constructor() {
    const apply = (ctx: ContextLike) => {
      const next = this.next
      this.next = undefined
      if (next) {
        for (const key of FIXTURE_FIELDS) delete ctx.event[key]
        for (const [key, value] of Object.entries(next)) if (key !== 'type') ctx.event[key] = value
      }
      return ctx
    }
    this.plugin = {
      name: 'Fixture Injector',
      type: 'before',
      version: '1.0.0',
      isLoaded: () => true,
      load: () => Promise.resolve(),
      ...Object.fromEntries(EVENT_METHODS.map((m) => [m, apply]))
    }
  }

  /** Sends `event` through `analytics` with the method its type calls for. */
  send(analytics: AnalyticsLike, event: Record<string, unknown>): Promise<unknown> {
    this.next = event
    switch (event.type) {
      case 'identify':
        return analytics.identify('fixture-placeholder')
      case 'page':
        return analytics.page()
      case 'group':
        return analytics.group('fixture-placeholder')
      case 'alias':
        return analytics.alias('fixture-placeholder')
      case 'screen':
        return (analytics.screen as NonNullable<AnalyticsLike['screen']>)('fixture-placeholder')
      default:
        return analytics.track('fixture-placeholder')
    }
  }
}

/** A plain destination plugin that records every event it receives as `type:event-or-userId` (proves other destinations are never blocked). */
export function plainRecorder(): { plugin: Record<string, unknown>; received: string[] } {
  const received: string[] = []
  const record = (ctx: ContextLike) => {
    received.push(`${String(ctx.event.type)}:${String(ctx.event.event ?? ctx.event.userId ?? '')}`)
    return ctx
  }
  return {
    received,
    plugin: {
      name: 'Plain Recorder',
      type: 'destination',
      version: '1.0.0',
      isLoaded: () => true,
      load: () => Promise.resolve(),
      ...Object.fromEntries(EVENT_METHODS.map((m) => [m, record]))
    }
  }
}

export interface LoggedLine {
  readonly level: string
  readonly message: string
}

/** Records every `ctx.log` made on any Analytics.js Context (the device-mode runtime hands actions a fresh one). */
export function recordContextLogs(ContextClass: { prototype: ContextLike }): LoggedLine[] {
  const lines: LoggedLine[] = []
  const original = ContextClass.prototype.log
  ContextClass.prototype.log = function (this: ContextLike, level: string, message: string, extras?: unknown) {
    lines.push({ level, message })
    return original.call(this, level, message, extras)
  }
  return lines
}

/** What the recording SDK has seen so far (undefined until it has loaded). */
export function sdkRecord(): SdkRecord | undefined {
  return (window as { __oneflowRecorder?: SdkRecord }).__oneflowRecorder
}

/** Timer callbacks fired since the page started (counted by the page's inline probe). */
export function timerFires(): number {
  return (window as unknown as { __timers: { fires: number } }).__timers.fires
}

/** Resolves after `ms` without using the page's counted timers' hot path (one timer only). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** What both browser adapters' test pages report about 1Flow's SDK, the other destination, logs and timers. */
export function recordedState(logs: readonly LoggedLine[], plain: { received: readonly string[] }) {
  const record = sdkRecord()
  return {
    calls: record?.calls ?? [],
    raw: record?.raw ?? [],
    loads: record?.loads ?? 0,
    apiKey: record?.apiKey ?? null,
    logs: logs.map((l) => `${l.level}: ${l.message}`),
    plain: [...plain.received],
    timerFires: timerFires(),
    sdkScripts: Array.from(document.scripts).filter((s) => s.src.startsWith('https://1flow.app/')).length
  }
}

/** Forgets what the SDK and the contexts recorded so far (the SDK stays loaded). */
export function resetRecorded(logs: LoggedLine[]): void {
  const record = sdkRecord()
  if (record) {
    record.calls.length = 0
    record.raw.length = 0
  }
  logs.length = 0
}
