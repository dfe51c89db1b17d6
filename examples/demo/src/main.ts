/**
 * What `pnpm start` runs.
 *
 * - With `oneflow-relay.json` in the repository root: the relay with that config.
 * - With ONEFLOW_PROJECT_API_KEY set: the relay with the SQLite default, delivering to 1Flow.
 * - Otherwise: a clearly labelled SANDBOX — the relay delivering to a local stand-in for 1Flow (testkit's
 *   fake API), so you can see events flow without a 1Flow account.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { createRelay, loadConfig, parseConfig, type Relay, type RelayConfig } from '@oneflow-seg/relay'
import { FakeOneFlowApi } from '@oneflow-seg/testkit/fake-oneflow-api'

const root = process.cwd()
const RELAY_PORT = Number(process.env.PORT ?? 8787)
const FAKE_PORT = Number(process.env.SANDBOX_1FLOW_PORT ?? 8788)
const SANDBOX_WRITE_KEY = 'sandbox-write-key'
const SANDBOX_PROJECT_KEY = 'sandbox-project-key'

async function main(): Promise<void> {
  const configFile = join(root, 'oneflow-relay.json')
  let config: RelayConfig
  let fake: FakeOneFlowApi | undefined
  let mode: string
  if (existsSync(configFile)) {
    config = loadConfig(configFile)
    mode = `your config (${configFile})`
  } else if (process.env.ONEFLOW_PROJECT_API_KEY) {
    config = parseConfig(
      {
        listen: { host: '127.0.0.1', port: RELAY_PORT },
        sources: [{ name: 'default', writeKey: process.env.ONEFLOW_WRITE_KEY ?? 'env:ONEFLOW_WRITE_KEY', projectApiKey: 'env:ONEFLOW_PROJECT_API_KEY' }]
      },
      { baseDir: root }
    )
    mode = "1Flow's HTTP API (https://api.1flow.app/v1), key from ONEFLOW_PROJECT_API_KEY"
  } else {
    fake = await FakeOneFlowApi.start({ port: FAKE_PORT, apiKeys: [SANDBOX_PROJECT_KEY] })
    config = parseConfig(
      {
        listen: { host: '127.0.0.1', port: RELAY_PORT },
        queue: 'sqlite:./data/sandbox-relay.db',
        oneflow: { apiBaseUrl: fake.url },
        sources: [{ name: 'sandbox', writeKey: SANDBOX_WRITE_KEY, projectApiKey: SANDBOX_PROJECT_KEY }]
      },
      { baseDir: root }
    )
    mode = 'SANDBOX'
  }

  const relay: Relay = await createRelay(config)
  const url = await relay.start()
  const origin = fake?.url.replace(/\/v1$/, '')
  const lines = [
    '',
    fake ? '================ SANDBOX: no 1Flow key configured ================' : '================ oneflow-relay ================',
    fake
      ? `Events go to a LOCAL STAND-IN for 1Flow at ${fake.url}, not to 1Flow.\nTo deliver to 1Flow: ONEFLOW_PROJECT_API_KEY=… ONEFLOW_WRITE_KEY=… pnpm start (or write oneflow-relay.json).`
      : `Delivering to ${mode}.`,
    `Relay (Segment's HTTP Tracking API): ${url}  queue: ${config.queue}`,
    '',
    'Send an event:',
    `  curl -s -u ${fake ? SANDBOX_WRITE_KEY : '<your-write-key>'}: -H 'content-type: application/json' \\`,
    `    -d '{"userId":"user-1","event":"Signed Up","properties":{"plan":"pro"}}' ${url}/v1/track`,
    ...(origin ? ['See where it arrived (what the 1Flow stand-in accepted):', `  curl -s ${origin}/__fake/accepted`] : ['Watch it leave:', `  curl -s ${url}/metrics | grep relay_delivery_events_total`]),
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
    process.exit(0)
  }
  process.on('SIGINT', () => void stop())
  process.on('SIGTERM', () => void stop())
}

main().catch((error: Error) => {
  console.error(error.message)
  process.exit(1)
})
