// A site that adds the plugin with a script tag (the `./script` build), as snippet users do, and registers it
// with Analytics.js from the global it defines.
import { AnalyticsBrowser } from '@segment/analytics-next'

interface Global {
  oneFlow(options: Record<string, unknown>): never
  VERSION: string
}
const w = window as unknown as { harness: unknown; OneFlowSegment?: Global }

w.harness = {
  async start(options: Record<string, unknown>) {
    await new Promise((resolve, reject) => {
      const script = document.createElement('script')
      script.src = '/oneflow.global.js'
      script.onload = resolve
      script.onerror = reject
      document.head.appendChild(script)
    })
    const [analytics] = await AnalyticsBrowser.load(
      { writeKey: 'wk', cdnSettings: { integrations: {} } as never },
      { disableClientPersistence: true }
    )
    await analytics.register(w.OneFlowSegment!.oneFlow(options))
    await analytics.identify('user-1', { plan: 'pro' })
    await analytics.track('Signed Up', { plan: 'pro' })
    return w.OneFlowSegment!.VERSION
  }
}
