// The sandbox demo page: Analytics.js with the 1Flow plugin (1Flow's SDK answered by a local stand-in),
// buttons that send identify / track / page, and what 1Flow receives — in the page through its web SDK,
// and server-side through the relay — as it happens; and a survey response 1Flow sends back, as Segment
// receives it through the relay's webhook.
import { AnalyticsBrowser } from '@segment/analytics-next'
import { oneFlow } from '@oneflow-seg/ajs-plugin'
import { presetOutcome, type SegmentEvent } from '@oneflow-seg/core/browser'

interface DemoConfig {
  readonly relayUrl: string
  readonly writeKey: string
  readonly projectApiKey: string
  readonly sdkUrl: string
}

const config = (window as unknown as { DEMO: DemoConfig }).DEMO
const $ = (id: string) => document.getElementById(id) as HTMLElement

const [analytics] = await AnalyticsBrowser.load(
  {
    writeKey: config.writeKey,
    cdnSettings: { integrations: { 'Segment.io': { apiKey: config.writeKey } }, metrics: { sampleRate: 0 } } as never
  },
  { integrations: { 'Segment.io': false }, disableClientPersistence: true }
)
await analytics.register(oneFlow({ projectApiKey: config.projectApiKey, sdkUrl: config.sdkUrl }))

/** The same event, server-side: Segment's HTTP Tracking API on the relay. */
async function viaRelay(type: string, body: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${config.relayUrl}/v1/${type}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Basic ${btoa(`${config.writeKey}:`)}` },
    body: JSON.stringify(body)
  })
  log(`relay answered ${res.status} to ${type}`)
}

function log(line: string): void {
  const li = document.createElement('li')
  li.textContent = `${new Date().toLocaleTimeString()} ${line}`
  $('log').prepend(li)
}

/**
 * Says why 1Flow gets nothing for an event, when it gets nothing: the plugin and the relay both use the presets
 * here, so core's decision for the event is theirs.
 */
function explain(event: Record<string, unknown>): void {
  const outcome = presetOutcome(event as unknown as SegmentEvent)
  if (outcome.kind !== 'skip') return
  const hint =
    event.type === 'page'
      ? ' Track Page View is opt-in: add {"name": "Page views", "subscribe": "type = \\"page\\"", "partnerAction": "trackPage"} to the mappings.'
      : ''
  log(
    `1Flow gets nothing for this ${String(event.type)}, in the browser or through the relay (${outcome.reason}): ${outcome.message}${hint}`
  )
}

const userId = () => ($('user') as HTMLInputElement).value.trim()
let n = 0

$('identify').addEventListener('click', () => {
  const traits = { name: 'Ada Lovelace', plan: 'pro' }
  void analytics.identify(userId(), traits)
  void viaRelay('identify', { userId: userId(), traits })
  explain({ type: 'identify', userId: userId() || undefined, traits })
})
$('track').addEventListener('click', () => {
  const properties = { plan: 'pro', clicks: ++n }
  void analytics.track('Signed Up', properties)
  void viaRelay('track', { userId: userId(), event: 'Signed Up', properties })
})
$('page').addEventListener('click', () => {
  void analytics.page('Pricing', { path: '/pricing' })
  void viaRelay('page', { userId: userId(), name: 'Pricing', properties: { path: '/pricing' } })
  explain({ type: 'page', userId: userId(), name: 'Pricing' })
})

$('survey').addEventListener('click', async () => {
  const res = await fetch(`/api/survey?user=${encodeURIComponent(userId())}`, { method: 'POST' })
  const { status } = (await res.json()) as { status?: number }
  log(`relay answered ${status ?? res.status} to 1Flow's survey-response webhook`)
})

// What 1Flow received: the web SDK's calls (recorded in this page) and the HTTP API's (from the relay's
// side, via the stand-in 1Flow), refreshed twice a second.
setInterval(async () => {
  const sdk = (window as unknown as { __oneflowRecorder?: { calls: unknown[] } }).__oneflowRecorder?.calls ?? []
  $('sdk').textContent = sdk.length ? sdk.map((c) => JSON.stringify(c)).join('\n') : '(none yet)'
  const http = (await (await fetch('/api/oneflow')).json()) as Array<{ via: string; type: string; body: unknown }>
  $('http').textContent = http.length
    ? http.map((m) => `${m.via} ${m.type} ${JSON.stringify(m.body)}`).join('\n')
    : '(none yet)'
  const segment = (await (await fetch('/api/segment')).json()) as Array<{
    event: string
    userId?: string
    properties: Record<string, unknown>
  }>
  $('segment').textContent = segment.length
    ? segment
        .map(
          (e) =>
            `track "${e.event}" userId=${e.userId} survey=${String(e.properties.survey_name)} answers=${JSON.stringify(e.properties.answers)}`
        )
        .join('\n')
    : '(none yet)'
  $('ready').textContent = 'ready'
}, 500)
