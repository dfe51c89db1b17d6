/**
 * relay-webhook: 1Flow → Segment. 4,000 distinct survey responses (a 10-screen survey each) POSTed to the
 * relay's webhook (the real CLI process, SQLite queue) by 32 concurrent senders, as 1Flow would; then every
 * one of them again, as 1Flow's retries. Figures: acknowledged webhooks/s and p99 acknowledgement time
 * (durable commit included), how long until the Segment stand-in holds every event, and how many
 * duplicates reached it (must be 0). Last, with 300,000 events for 1Flow queued (1Flow down), 20 more survey
 * responses one after another: the most any of them took from the webhook to Segment (the two directions never
 * wait for each other).
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FakeOneFlowApi } from '@oneflow-seg/testkit/fake-oneflow-api'
import { FakeSegmentApi } from '@oneflow-seg/testkit/fake-segment-api'
import { manyScreens, surveyWebhookPayload } from '@oneflow-seg/testkit/survey-webhook'
import { machine, repoRoot } from './_machine'

const RESPONSES = 4_000
const SENDERS = 32
const PORT = 18811
const TOKEN = 'bench-webhook-token-0123456789abcdef'
const relayCli = createRequire(join(repoRoot(), 'bench', 'package.json'))
  .resolve('@oneflow-seg/relay/package.json')
  .replace(/package\.json$/, 'dist/cli.cjs')

const oneflow = await FakeOneFlowApi.start()
const segment = await FakeSegmentApi.start({ writeKeys: ['bench-segment-key'] })
const dir = mkdtempSync(join(tmpdir(), 'relay-webhook-'))
const config = join(dir, 'relay.json')
writeFileSync(
  config,
  JSON.stringify({
    listen: { host: '127.0.0.1', port: PORT },
    queue: 'sqlite:./relay.db',
    oneflow: { apiBaseUrl: oneflow.url },
    sources: [
      {
        name: 'bench',
        writeKey: 'wk',
        projectApiKey: 'test-project-key',
        webhookToken: TOKEN,
        segment: { writeKey: 'bench-segment-key', host: segment.url }
      }
    ]
  })
)
const relay = spawn(process.execPath, [relayCli, 'start', '--config', config], {
  stdio: ['ignore', 'ignore', 'inherit'],
  env: { ...process.env, LOG_LEVEL: 'error' }
})
for (let up = false; !up;) {
  up = await fetch(`http://127.0.0.1:${PORT}/health/live`).then(
    (r) => r.ok,
    () => false
  )
  if (!up) await new Promise((r) => setTimeout(r, 50))
}

const screens = manyScreens(10, 80)
const bodies = Array.from({ length: RESPONSES }, (_, i) =>
  JSON.stringify(
    surveyWebhookPayload({ alertId: `bench-${i}`, screens, user: { user_id: `user-${i % 500}`, _id: `of-${i % 500}` } })
  )
)
const url = `http://127.0.0.1:${PORT}/webhooks/1flow/bench/${TOKEN}`

/** Sends every body with SENDERS concurrent senders; returns per-request latencies (ms) and the non-200 count. */
async function send(
  all: readonly string[]
): Promise<{ seconds: number; latencies: number[]; failed: number; duplicates: number }> {
  const latencies: number[] = []
  let next = 0
  let failed = 0
  let duplicates = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: SENDERS }, async () => {
      while (next < all.length) {
        const body = all[next++] as string
        const t = performance.now()
        const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
        const answer = (await res.json()) as { duplicate?: boolean }
        latencies.push(performance.now() - t)
        if (res.status !== 200) failed++
        if (answer.duplicate) duplicates++
      }
    })
  )
  return { seconds: (performance.now() - started) / 1000, latencies, failed, duplicates }
}

const p99 = (values: number[]) => Math.round([...values].sort((a, b) => a - b)[Math.floor(values.length * 0.99)] ?? 0)

const started = performance.now()
const first = await send(bodies)
await segment.waitFor((a) => a.length >= RESPONSES, 120_000)
const allDeliveredSeconds = (performance.now() - started) / 1000
const retried = await send(bodies)
await new Promise((r) => setTimeout(r, 1000))
const delivered = segment.accepted.length

// A 1Flow backlog beside the survey responses: 1Flow down, 300,000 events queued for it.
const BACKLOG = 300_000
oneflow.inject({ kind: 'status', status: 503, retryAfter: '1', times: Number.MAX_SAFE_INTEGER })
const auth = `Basic ${Buffer.from('wk:').toString('base64')}`
let queued = 0
await Promise.all(
  Array.from({ length: 16 }, async () => {
    while (queued < BACKLOG) {
      const base = queued
      queued += 500
      const batch = Array.from({ length: 500 }, (_, i) => ({
        type: 'track',
        event: 'Backlog',
        userId: `u-${(base + i) % 5000}`,
        messageId: `backlog-${base + i}`
      }))
      const res = await fetch(`http://127.0.0.1:${PORT}/v1/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: auth },
        body: JSON.stringify({ batch })
      })
      if (res.status !== 200) throw new Error(`backlog ingest answered ${res.status}`)
    }
  })
)
const toSegment: number[] = []
for (let i = 0; i < 20; i++) {
  const before = segment.accepted.length
  const t = performance.now()
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(
      surveyWebhookPayload({ alertId: `behind-backlog-${i}`, user: { user_id: `late-${i}`, _id: `of-late-${i}` } })
    )
  })
  if (res.status !== 200) throw new Error(`webhook answered ${res.status}`)
  await segment.waitFor((a) => a.length > before, 60_000)
  toSegment.push(performance.now() - t)
}
relay.kill('SIGTERM')
await new Promise((r) => relay.once('exit', r))
await Promise.all([oneflow.close(), segment.close()])

console.log(
  JSON.stringify(
    {
      machine: machine(),
      responses: RESPONSES,
      senders: SENDERS,
      screens_per_response: screens.length,
      segment_requests: segment.requests.length,
      first,
      retried: { ...retried, latencies: undefined }
    },
    (k, v) => (k === 'latencies' ? undefined : v)
  )
)
console.log(
  JSON.stringify({
    bench: 'relay-webhook',
    webhooks_per_s: Math.round(RESPONSES / first.seconds),
    ack_p99_ms: p99(first.latencies),
    all_in_segment_s: Math.round(allDeliveredSeconds * 10) / 10,
    retries_acknowledged_as_duplicates: retried.duplicates,
    events_at_segment: delivered,
    duplicates_at_segment: delivered - RESPONSES,
    failed_requests: first.failed + retried.failed,
    oneflow_backlog_events: BACKLOG,
    webhook_to_segment_max_ms_with_1flow_backlog: Math.round(Math.max(...toSegment)),
    webhook_to_segment_p50_ms_with_1flow_backlog: Math.round([...toSegment].sort((a, b) => a - b)[10] ?? 0)
  })
)
