/**
 * A page that runs the real Analytics.js 2.0 (`@segment/analytics-next`) with the relay as its API host, as a
 * site would: `integrations['Segment.io'].apiHost` in the load options, no Segment CDN.
 */
import { AnalyticsBrowser } from '@segment/analytics-next'

interface Start {
  readonly writeKey: string
  /** host:port/v1 of the relay (analytics.js adds the protocol). */
  readonly apiHost: string
  readonly batching: boolean
}

const w = window as unknown as { harness: unknown; analytics?: Awaited<ReturnType<typeof AnalyticsBrowser.load>>[0] }

w.harness = {
  async start({ writeKey, apiHost, batching }: Start) {
    const [analytics] = await AnalyticsBrowser.load(
      // Segment's CDN settings, given locally; telemetry on, flushed quickly, so /v1/m is exercised too.
      {
        writeKey,
        cdnSettings: {
          integrations: { 'Segment.io': { apiKey: writeKey } },
          metrics: { sampleRate: 1, flushTimer: 100 }
        }
      },
      {
        disableClientPersistence: true,
        integrations: {
          'Segment.io': {
            apiHost,
            protocol: 'http',
            ...(batching && { deliveryStrategy: { strategy: 'batching', config: { size: 3, timeout: 200 } } })
          }
        }
      }
    )
    w.analytics = analytics
  },
  async send() {
    const a = w.analytics!
    await a.identify('user-7', { email: 'ada@example.com', plan: 'pro' })
    await a.track('Signed Up', { plan: 'pro', seats: 3 })
    await a.page('Docs', 'Pricing', { path: '/pricing', url: 'https://example.com/pricing', title: 'Pricing' })
  }
}
