/**
 * relay-egress: a 100,000-event backlog already in the SQLite queue, drained by the relay (the real CLI
 * process) to the stand-in 1Flow in batch mode; events/s, requests/s (never above the configured limit,
 * measured where 1Flow would see them) and the relay's peak RSS. Then the same in single mode (one request
 * per event) with a smaller backlog, where the request-rate limit is what bounds the drain.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { projectIdOf, SqliteQueue } from '@oneflow-seg/relay'
import { FakeOneFlowApi } from '@oneflow-seg/testkit/fake-oneflow-api'
import { machine, repoRoot } from './_machine'

const LIMIT = 400
const relayCli = createRequire(join(repoRoot(), 'bench', 'package.json'))
  .resolve('@oneflow-seg/relay/package.json')
  .replace(/package\.json$/, 'dist/cli.cjs')

function peakRssMb(pid: number): number {
  const kb = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
  return Math.round(Number(kb ?? 0) / 1024)
}

async function drain(mode: 'batch' | 'single', events: number, port: number) {
  const fake = await FakeOneFlowApi.start()
  const dir = mkdtempSync(join(tmpdir(), 'relay-egress-'))
  const projectApiKey = 'test-project-key'
  const queue = new SqliteQueue(join(dir, 'relay.db'))
  const now = Date.now()
  for (let start = 0; start < events; start += 10_000) {
    await queue.enqueue(
      Array.from({ length: Math.min(10_000, events - start) }, (_, j) => {
        const i = start + j
        const userId = `user-${i % 10_000}`
        const body = {
          type: 'track',
          event: 'Backlog Event',
          userId,
          messageId: `egress-${i}`,
          timestamp: new Date(now).toISOString(),
          properties: { plan: 'pro', n: i, path: '/pricing' }
        }
        return {
          messageId: body.messageId,
          sourceName: 'bench',
          projectId: projectIdOf(projectApiKey),
          userKey: userId,
          body: JSON.stringify(body),
          receivedAt: now
        }
      })
    )
  }
  await queue.close()
  const config = join(dir, 'relay.json')
  writeFileSync(
    config,
    JSON.stringify({
      listen: { host: '127.0.0.1', port },
      queue: 'sqlite:./relay.db',
      oneflow: { apiBaseUrl: fake.url, mode, maxRequestsPerSecond: LIMIT },
      sources: [{ name: 'bench', writeKey: 'wk', projectApiKey }]
    })
  )
  const started = Date.now()
  const relay = spawn(process.execPath, [relayCli, 'start', '--config', config], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, LOG_LEVEL: 'warn' }
  })
  await fake.waitFor((accepted) => accepted.length >= events, 600_000)
  const seconds = (Date.now() - started) / 1000
  const rss = peakRssMb(relay.pid as number)
  relay.kill('SIGTERM')
  await new Promise((r) => relay.once('exit', r))
  const result = {
    events_per_s: Math.round(events / seconds),
    requests_per_s: Math.round((fake.requests.length / seconds) * 10) / 10,
    max_requests_in_any_second: fake.maxRequestsInWindow(1000),
    requests: fake.requests.length,
    seconds: Math.round(seconds * 10) / 10,
    peak_rss_mb: rss,
    duplicates: fake.accepted.length - events
  }
  await fake.close()
  return result
}

const batch = await drain('batch', 100_000, 18801)
const single = await drain('single', 4_000, 18802)
console.log(JSON.stringify({ machine: machine(), limit_requests_per_s: LIMIT, batch, single }))
console.log(
  JSON.stringify({
    bench: 'relay-egress',
    backlog_events: 100_000,
    events_per_s: batch.events_per_s,
    requests_per_s: batch.requests_per_s,
    max_requests_in_any_second: batch.max_requests_in_any_second,
    peak_rss_mb: batch.peak_rss_mb,
    single_mode_requests_per_s: single.requests_per_s,
    single_mode_max_requests_in_any_second: single.max_requests_in_any_second,
    limit_requests_per_s: LIMIT
  })
)
