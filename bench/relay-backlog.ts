/**
 * relay-backlog: a million events while 1Flow is down, then 1Flow comes back. The relay (the real CLI process,
 * SQLite queue) takes 1,000,000 events through /v1/batch (100 a request) while the stand-in 1Flow answers 503;
 * then 1Flow accepts again and the backlog drains at the default 400 requests/s. Reports ingest events/s, the
 * relay's peak RSS during ingest and during the drain (sampled), the drain time, the most requests 1Flow saw in
 * any one second, and events lost or delivered twice. `BACKLOG_EVENTS` sets a smaller backlog for a quick run.
 *
 * Then the same drain with clients sending: a backlog of DRAIN_EVENTS (100,000, or BACKLOG_EVENTS if smaller)
 * is drained once with nobody sending (`drain_idle_events_per_s`) and once while a client sends a 10-event
 * request every 100 ms with a 1.1 s pause every 28 s (`drain_under_traffic_events_per_s`): how much the relay's
 * clients-first rule (BurstGate) slows delivery under steady traffic. `ops_ms_empty` / `ops_ms_at_backlog`: the
 * median time of a GET /health or /metrics with the queue empty and with the whole backlog queued (the relay's one
 * thread also leases and retries meanwhile); `stats_ms_*`: the queue's figures alone, read from the file by this
 * process.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { SqliteQueue } from '@oneflow-seg/relay'
import { FakeOneFlowApi } from '@oneflow-seg/testkit/fake-oneflow-api'
import { machine, repoRoot } from './_machine'

const EVENTS = Number(process.env.BACKLOG_EVENTS ?? 1_000_000)
const DRAIN_EVENTS = Math.min(100_000, EVENTS)
const PER_REQUEST = 100
const WRITE_KEY = 'backlog-write-key'
const AUTH = `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`
const relayCli = createRequire(join(repoRoot(), 'bench', 'package.json'))
  .resolve('@oneflow-seg/relay/package.json')
  .replace(/package\.json$/, 'dist/cli.cjs')

const rssMb = (pid: number) =>
  Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024)

const fake = await FakeOneFlowApi.start()
fake.inject({ kind: 'status', status: 503, retryAfter: '1', times: Number.MAX_SAFE_INTEGER })
const dir = mkdtempSync(join(tmpdir(), 'relay-backlog-'))
const port = 18795
writeFileSync(
  join(dir, 'relay.json'),
  JSON.stringify({
    listen: { host: '127.0.0.1', port },
    queue: 'sqlite:./relay.db',
    oneflow: { apiBaseUrl: fake.url },
    limits: { diskCapBytes: 8 * 1024 ** 3 },
    sources: [{ name: 'bench', writeKey: WRITE_KEY, projectApiKey: 'test-project-key' }]
  })
)
const relay = spawn(process.execPath, [relayCli, 'start', '--config', join(dir, 'relay.json')], {
  stdio: ['ignore', 'ignore', 'inherit'],
  env: { ...process.env, LOG_LEVEL: 'warn' }
})
const pid = relay.pid as number
let peak = 0
const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 200)
const url = `http://127.0.0.1:${port}`
try {
  for (
    let i = 0;
    i < 200 &&
    !(await fetch(`${url}/health/live`).then(
      (r) => r.ok,
      () => false
    ));
    i++
  )
    await new Promise((r) => setTimeout(r, 50))

  /** Sends `count` events (ids from `first`) through /v1/batch, 100 a request, 16 connections at once. */
  const ingest = async (first: number, count: number) => {
    let seq = first
    const result = await new Promise<autocannon.Result>((resolve, reject) =>
      autocannon(
        {
          url: `${url}/v1/batch`,
          connections: 16,
          amount: Math.ceil(count / PER_REQUEST),
          requests: [
            {
              method: 'POST',
              headers: { 'content-type': 'application/json', authorization: AUTH },
              setupRequest: (req) => {
                const base = seq
                seq += PER_REQUEST
                const batch = Array.from({ length: PER_REQUEST }, (_, i) => ({
                  type: 'track',
                  event: 'Backlog Event',
                  userId: `user-${(base + i) % 10_000}`,
                  messageId: `backlog-${base + i}`,
                  properties: { id: base + i, plan: 'pro' }
                }))
                return { ...req, body: JSON.stringify({ batch }) }
              }
            }
          ]
        },
        (error, r) => (error ? reject(error) : resolve(r))
      )
    )
    if (result.non2xx > 0 || result.errors > 0)
      throw new Error(`ingest refused requests: ${result.non2xx} non-2xx, ${result.errors} errors`)
  }

  /** GET /health and /metrics, 20 each, one after another: the median time of one (ms). */
  const opsMs = async () => {
    const times: number[] = []
    for (let i = 0; i < 40; i++) {
      const t = performance.now()
      await (await fetch(`${url}${i % 2 ? '/health' : '/metrics'}`)).text()
      times.push(performance.now() - t)
      // Past the relay's one-second cache of the queue's figures, so each reads them afresh.
      if (i % 2) await new Promise((r) => setTimeout(r, 1_050))
    }
    return Math.round((times.sort((a, b) => a - b)[20] as number) * 10) / 10
  }
  const opsEmpty = await opsMs()
  /** The queue's figures read straight from the file (this process, its own connection): median ms of 20. */
  const statsMs = async () => {
    const queue = new SqliteQueue(join(dir, 'relay.db'), { reserveBytes: 0 })
    const times: number[] = []
    for (let i = 0; i < 20; i++) {
      const t = performance.now()
      await queue.stats(Date.now())
      times.push(performance.now() - t)
    }
    await queue.close()
    return Math.round((times.sort((a, b) => a - b)[10] as number) * 100) / 100
  }
  const statsEmpty = await statsMs()

  const started = Date.now()
  await ingest(0, EVENTS)
  const ingestS = (Date.now() - started) / 1000
  const opsAtBacklog = await opsMs()
  const statsAtBacklog = await statsMs()
  const ingestPeak = peak
  // The relay's own view once ingest is over: V8's heap in use (what the relay keeps) beside what V8 has reserved.
  const metricsText = await (await fetch(`${url}/metrics`)).text()
  const metricMb = (name: string) =>
    Math.round(Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)`, 'm').exec(metricsText)?.[1] ?? 0) / 1024 ** 2)
  const heapAfterIngest = {
    heap_used_mb_after_ingest: metricMb('nodejs_heap_size_used_bytes'),
    heap_total_mb_after_ingest: metricMb('nodejs_heap_size_total_bytes')
  }

  // 1Flow is back: drain.
  peak = rssMb(pid)
  fake.reset()
  const drainStarted = Date.now()
  await fake.waitFor((accepted) => accepted.length >= EVENTS, 1_800_000)
  const drainS = (Date.now() - drainStarted) / 1000
  const ids = new Set(fake.accepted.map((m) => (m.body.properties as { id: number }).id))
  let lost = 0
  for (let i = 0; i < EVENTS; i++) if (!ids.has(i)) lost++
  const drainRequests = fake.requests.length
  const maxInAnySecond = fake.maxRequestsInWindow(1000)
  const duplicates = fake.accepted.length - ids.size

  /** A backlog of DRAIN_EVENTS with 1Flow down, then drained, with or without a client sending meanwhile: events/s. */
  let nextId = EVENTS
  const drainRate = async (traffic: boolean) => {
    fake.reset()
    fake.inject({ kind: 'status', status: 503, retryAfter: '1', times: Number.MAX_SAFE_INTEGER })
    const first = nextId
    nextId += DRAIN_EVENTS
    await ingest(first, DRAIN_EVENTS)
    // Every backlog event is in the queue before 1Flow comes back.
    fake.reset()
    const began = Date.now()
    let sent = 0
    const client = traffic
      ? setInterval(() => {
          // A request every 100 ms, with a 1.1 s pause every 28 s.
          if ((Date.now() - began) % 29_100 >= 28_000) return
          const batch = Array.from({ length: 10 }, () => ({
            type: 'track',
            event: 'Live Event',
            userId: `live-${sent % 500}`,
            messageId: `live-${first}-${sent++}`
          }))
          void fetch(`${url}/v1/batch`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: AUTH },
            body: JSON.stringify({ batch })
          }).catch(() => undefined)
        }, 100)
      : undefined
    const isBacklog = (m: { body: Record<string, unknown> }) =>
      Number((m.body.properties as { id?: number } | undefined)?.id) >= first
    let delivered = 0
    let counted = 0
    await fake.waitFor((accepted) => {
      for (; counted < accepted.length; counted++) if (isBacklog(accepted[counted] as never)) delivered++
      return delivered >= DRAIN_EVENTS
    }, 1_800_000)
    clearInterval(client)
    return Math.round(DRAIN_EVENTS / ((Date.now() - began) / 1000))
  }
  const drainIdle = await drainRate(false)
  const drainUnderTraffic = await drainRate(true)

  console.log(
    JSON.stringify({ machine: machine(), events: EVENTS, requests_to_1flow: drainRequests, ...heapAfterIngest })
  )
  console.log(
    JSON.stringify({
      bench: 'relay-backlog',
      events: EVENTS,
      ingest_events_per_s: Math.round(EVENTS / ingestS),
      peak_rss_mb_ingest: ingestPeak,
      peak_rss_mb_drain: peak,
      drain_s: Math.round(drainS * 10) / 10,
      max_requests_in_any_second: maxInAnySecond,
      lost,
      duplicates,
      ops_ms_empty: opsEmpty,
      ops_ms_at_backlog: opsAtBacklog,
      stats_ms_empty: statsEmpty,
      stats_ms_at_backlog: statsAtBacklog,
      drain_events: DRAIN_EVENTS,
      drain_idle_events_per_s: drainIdle,
      drain_under_traffic_events_per_s: drainUnderTraffic
    })
  )
} finally {
  clearInterval(sampler)
  relay.kill('SIGTERM')
  await new Promise((r) => relay.once('exit', r))
  await fake.close()
  // A million-event queue takes about a gigabyte.
  rmSync(dir, { recursive: true, force: true })
}
