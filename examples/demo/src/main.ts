/**
 * What `pnpm start` runs.
 *
 * - With `oneflow-relay.json` in the repository root: the relay with that config.
 * - With ONEFLOW_PROJECT_API_KEY set: the relay with the SQLite default, delivering to 1Flow.
 * - Otherwise: a clearly labelled SANDBOX — the relay delivering to a local stand-in for 1Flow (testkit's
 *   fake API), so you can see events flow without a 1Flow account.
 */
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRelay, loadConfig, parseConfig, type Relay, type RelayConfig } from '@oneflow-seg/relay'
import { FakeOneFlowApi } from '@oneflow-seg/testkit/fake-oneflow-api'
import { FakeSegmentApi } from '@oneflow-seg/testkit/fake-segment-api'
import { recordingSdkScript } from '@oneflow-seg/testkit/recording-sdk'
import { surveyWebhookPayload } from '@oneflow-seg/testkit/survey-webhook'

const root = process.cwd()
const RELAY_PORT = Number(process.env.PORT ?? 8787)
const FAKE_PORT = Number(process.env.SANDBOX_1FLOW_PORT ?? 8788)
const DEMO_PORT = Number(process.env.DEMO_PORT ?? 8789)
const SEGMENT_PORT = Number(process.env.SANDBOX_SEGMENT_PORT ?? 8790)
const PAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), 'page')
const SANDBOX_WRITE_KEY = 'sandbox-write-key'
const SANDBOX_PROJECT_KEY = 'sandbox-project-key'
const SANDBOX_SEGMENT_KEY = 'sandbox-segment-write-key'
const SANDBOX_WEBHOOK_TOKEN = 'sandbox-webhook-token-0123456789'

async function main(): Promise<void> {
  const configFile = join(root, 'oneflow-relay.json')
  let config: RelayConfig
  let fake: FakeOneFlowApi | undefined
  let segment: FakeSegmentApi | undefined
  let mode: string
  if (existsSync(configFile)) {
    config = loadConfig(configFile)
    mode = `your config (${configFile})`
  } else if (process.env.ONEFLOW_PROJECT_API_KEY) {
    config = parseConfig(
      {
        listen: { host: '127.0.0.1', port: RELAY_PORT },
        sources: [
          {
            name: 'default',
            writeKey: process.env.ONEFLOW_WRITE_KEY ?? 'env:ONEFLOW_WRITE_KEY',
            projectApiKey: 'env:ONEFLOW_PROJECT_API_KEY'
          }
        ]
      },
      { baseDir: root }
    )
    mode = "1Flow's HTTP API (https://api.1flow.app/v1), key from ONEFLOW_PROJECT_API_KEY"
  } else {
    fake = await FakeOneFlowApi.start({ port: FAKE_PORT, apiKeys: [SANDBOX_PROJECT_KEY] })
    segment = await FakeSegmentApi.start({ port: SEGMENT_PORT, writeKeys: [SANDBOX_SEGMENT_KEY] })
    config = parseConfig(
      {
        listen: { host: '127.0.0.1', port: RELAY_PORT },
        queue: 'sqlite:./data/sandbox-relay.db',
        oneflow: { apiBaseUrl: fake.url },
        statusPage: { enabled: true },
        sources: [
          {
            name: 'sandbox',
            writeKey: SANDBOX_WRITE_KEY,
            projectApiKey: SANDBOX_PROJECT_KEY,
            // 1Flow → Segment: survey responses posted to the relay's webhook go to a Segment stand-in.
            webhookToken: SANDBOX_WEBHOOK_TOKEN,
            segment: { writeKey: SANDBOX_SEGMENT_KEY, host: segment.url }
          }
        ]
      },
      { baseDir: root }
    )
    mode = 'SANDBOX'
  }

  const relay: Relay = await createRelay(config)
  const url = await relay.start()
  const origin = fake?.url.replace(/\/v1$/, '')
  const webhookUrl = `${url}/webhooks/1flow/sandbox/${SANDBOX_WEBHOOK_TOKEN}`
  const demo = fake && segment ? await startDemoPage(url, webhookUrl, fake, segment) : undefined
  const lines = [
    '',
    fake
      ? '================ SANDBOX: no 1Flow key configured ================'
      : '================ oneflow-relay ================',
    ...(demo
      ? [
          `Open the demo: ${demo}  (buttons send identify/track/page; see what 1Flow receives; answer a survey; see what Segment receives)`,
          `Relay status:  ${url}/status`,
          `1Flow webhook: ${webhookUrl}  (survey responses → the Segment stand-in at ${segment?.url})`,
          ''
        ]
      : []),
    fake
      ? `Events go to a LOCAL STAND-IN for 1Flow at ${fake.url}, not to 1Flow.\nTo deliver to 1Flow: ONEFLOW_PROJECT_API_KEY=… ONEFLOW_WRITE_KEY=… pnpm start (or write oneflow-relay.json).`
      : `Delivering to ${mode}.`,
    `Relay (Segment's HTTP Tracking API): ${url}  queue: ${config.queue}`,
    '',
    'Send an event:',
    `  curl -s -u ${fake ? SANDBOX_WRITE_KEY : '<your-write-key>'}: -H 'content-type: application/json' \\`,
    `    -d '{"userId":"user-1","event":"Signed Up","properties":{"plan":"pro"}}' ${url}/v1/track`,
    ...(origin
      ? ['See where it arrived (what the 1Flow stand-in accepted):', `  curl -s ${origin}/__fake/accepted`]
      : ['Watch it leave:', `  curl -s ${url}/metrics | grep relay_delivery_events_total`]),
    `Health: ${url}/health   Metrics: ${url}/metrics`,
    'Stop with Ctrl-C.',
    ''
  ]
  console.error(lines.join('\n'))

  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    await relay.stop()
    await fake?.close()
    await segment?.close()
    process.exit(0)
  }
  process.on('SIGINT', () => void stop())
  process.on('SIGTERM', () => void stop())
}

/** The sandbox demo page, its bundle, a recording 1Flow web SDK, and what the stand-ins for 1Flow and Segment received. */
async function startDemoPage(
  relayUrl: string,
  webhookUrl: string,
  fake: FakeOneFlowApi,
  segment: FakeSegmentApi
): Promise<string> {
  let responses = 0
  const origin = `http://127.0.0.1:${DEMO_PORT}`
  const demoConfig = {
    relayUrl,
    writeKey: SANDBOX_WRITE_KEY,
    projectApiKey: SANDBOX_PROJECT_KEY,
    sdkUrl: `${origin}/sdk/1flow.js`
  }
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>oneflow-seg sandbox</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;max-width:1100px;color:#1d2430}button{margin-right:8px;padding:6px 12px}
pre{background:#f4f6f8;padding:10px;border-radius:6px;white-space:pre-wrap;min-height:60px}.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.banner{background:#fff7e6;border:1px solid #f5c26b;padding:8px 12px;border-radius:6px;margin-bottom:16px}</style>
<script>window.DEMO = ${JSON.stringify(demoConfig)}</script></head><body>
<div class="banner"><b>Sandbox.</b> 1Flow here is a local stand-in: nothing leaves this machine. <span id="ready">loading…</span></div>
<h1>Segment → 1Flow</h1>
<p>User ID <input id="user" value="user-1"> <button id="identify">identify</button><button id="track">track "Signed Up"</button><button id="page">page "Pricing"</button>
<a href="${relayUrl}/status" target="_blank">relay status</a></p>
<div class="grid"><div><h2>In the browser: 1Flow web SDK calls</h2><pre id="sdk">(none yet)</pre></div>
<div><h2>Server-side: 1Flow HTTP API calls (via the relay)</h2><pre id="http">(none yet)</pre></div></div>
<h2>And back: 1Flow survey responses → Segment</h2>
<p><button id="survey">1Flow: the user answers the NPS survey</button> (1Flow POSTs the response to the relay's webhook; the relay sends it to Segment)</p>
<pre id="segment">(none yet)</pre>
<h2>Log</h2><ul id="log"></ul>
<script type="module" src="/page.js"></script></body></html>`
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] as string
    if (path === '/') return void res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(html)
    if (path === '/sdk/1flow.js')
      return void res.writeHead(200, { 'content-type': 'text/javascript' }).end(recordingSdkScript())
    if (path === '/api/segment') {
      const events = segment.accepted.map(({ event }) => event)
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(events))
    }
    if (path === '/api/survey' && req.method === 'POST') {
      // Plays 1Flow: POSTs a survey response, as its webhook would, to the relay.
      const userId = new URL(req.url ?? '/', origin).searchParams.get('user') || 'user-1'
      const payload = surveyWebhookPayload({
        alertId: `demo-${Date.now()}-${++responses}`,
        user: { user_id: userId, _id: `of-${userId}` }
      })
      void fetch(webhookUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(payload)
      }).then(
        (r) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: r.status })),
        (e: Error) =>
          res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ error: e.message }))
      )
      return
    }
    if (path === '/api/oneflow') {
      const calls = fake.accepted.map(({ via, type, body }) => ({ via, type, body }))
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(calls))
    }
    const file = join(PAGE_DIR, path.replace(/\.\./g, ''))
    if (/^\/[\w.-]+\.js$/.test(path) && existsSync(file))
      return void res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(file))
    res.writeHead(404).end()
  })
  await new Promise<void>((resolve) => server.listen(DEMO_PORT, '127.0.0.1', resolve))
  return origin
}

main().catch((error: Error) => {
  console.error(error.message)
  process.exit(1)
})
