/** Types for the legacy `analytics-node` 6.x client (it ships none), as far as the tests use it. */
declare module 'analytics-node' {
  export default class Analytics {
    constructor(
      writeKey: string,
      options?: { host?: string; flushAt?: number; flushInterval?: number; enable?: boolean }
    )
    identify(message: Record<string, unknown>): this
    track(message: Record<string, unknown>): this
    page(message: Record<string, unknown>): this
    flush(callback?: (error?: unknown) => void): Promise<unknown>
  }
}
