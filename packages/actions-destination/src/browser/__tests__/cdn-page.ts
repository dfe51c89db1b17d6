// A site that keeps its workspace's CDN settings and only swaps in this package's build of "1Flow Web
// (Actions)": `AnalyticsBrowser.load({ writeKey, plugins: [oneFlowWebActions] })`, as README shows.
import { AnalyticsBrowser } from '@segment/analytics-next'
import oneFlowWebActions from '../index'

const w = window as unknown as { harness: unknown; analytics?: Awaited<ReturnType<typeof AnalyticsBrowser.load>>[0] }

w.harness = {
  async start(writeKey: string) {
    const [analytics] = await AnalyticsBrowser.load(
      { writeKey, plugins: [oneFlowWebActions] },
      { disableClientPersistence: true }
    )
    w.analytics = analytics
  },
  async track(event: string, properties: Record<string, unknown>) {
    await w.analytics!.track(event, properties)
  }
}
