/**
 * relay-scale: durable ingest events/s through /v1/batch (100 events a request) with 1 and with 3 relay
 * processes on one PostgreSQL database (a throwaway cluster on 127.0.0.1), and with one relay on SQLite, in
 * one run, with one load generator. Delivery is held (1Flow refuses the project key, so the relays pause
 * and probe) to measure the write path alone. On a 2-core machine the relays, PostgreSQL and the load
 * generator share the cores, so 3 instances show the cost of sharing, not the gain of more machines.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { FakeOneFlowApi } from '@oneflow-seg/testkit/fake-oneflow-api'
import { createDatabase, startThrowawayPostgres } from '@oneflow-seg/testkit/postgres'
import { machine, repoRoot } from './_machine'

const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 8)
const CONNECTIONS = 30
const WRITE_KEY = 'bench-write-key'
const AUTH = `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`
const relayCli = createRequire(join(repoRoot(), 'bench', 'package.json'))
  .resolve('@oneflow-seg/relay/package.json')
  .replace(/package\.json$/, 'dist/cli.cjs')

let seq = 0
function batchBody(): string {
  const base = seq
  seq += 100
  return JSON.stringify({
    batch: Array.from({ length: 100 }, (_, i) => ({
      type: 'track',
      event: 'Bench Event',
      userId: `user-${(base + i) % 5000}`,
      messageId: `scale-${base + i}`,
      properties: { plan: 'pro', seats: i }
    }))
  })
}

async function startRelays(
  queue: string,
  count: number,
  apiBaseUrl: string,
  firstPort: number
): Promise<{ urls: string[]; stop(): Promise<void> }> {
  const children: ChildProcess[] = []
  const urls: string[] = []
  for (let i = 0; i < count; i++) {
    const port = firstPort + i
    const dir = mkdtempSync(join(tmpdir(), 'relay-scale-'))
    const config = join(dir, 'relay.json')
    writeFileSync(
      config,
      JSON.stringify({
        listen: { host: '127.0.0.1', port },
        queue,
        oneflow: { apiBaseUrl },
        sources: [{ name: 'bench', writeKey: WRITE_KEY, projectApiKey: 'refused-key' }]
      })
    )
    children.push(
      spawn(process.execPath, [relayCli, 'start', '--config', config], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, LOG_LEVEL: 'error' }
      })
    )
    urls.push(`http://127.0.0.1:${port}`)
  }
  for (const url of urls) {
    for (
      let tries = 0;
      !(await fetch(`${url}/health/live`).then(
        () => true,
        () => false
      ));
      tries++
    ) {
      if (tries > 300) throw new Error(`relay at ${url} did not start`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  return {
    urls,
    async stop() {
      await Promise.all(children.map((c) => new Promise((r) => (c.once('exit', r), c.kill('SIGTERM')))))
    }
  }
}

function load(urls: string[]): Promise<{ eventsPerS: number; p99: number; failures: number }> {
  const per = Math.ceil(CONNECTIONS / urls.length)
  return Promise.all(
    urls.map(
      (url) =>
        new Promise<autocannon.Result>((resolve, reject) =>
          autocannon(
            {
              url: `${url}/v1/batch`,
              connections: per,
              duration: DURATION_S,
              requests: [
                {
                  method: 'POST',
                  headers: { 'content-type': 'application/json', authorization: AUTH },
                  setupRequest: (req) => ({ ...req, body: batchBody() })
                }
              ]
            },
            (error, result) => (error ? reject(error) : resolve(result))
          )
        )
    )
  ).then((results) => ({
    eventsPerS: Math.round(results.reduce((n, r) => n + r.requests.average * 100, 0)),
    p99: Math.max(...results.map((r) => r.latency.p99)),
    failures: results.reduce((n, r) => n + r.non2xx + r.errors, 0)
  }))
}

const fake = await FakeOneFlowApi.start({ apiKeys: [] })
const pg = await startThrowawayPostgres()
const results: Record<string, { eventsPerS: number; p99: number; failures: number }> = {}
try {
  const runs: Array<[string, string, number]> = [
    ['sqlite_1', `sqlite:${join(mkdtempSync(join(tmpdir(), 'relay-scale-sqlite-')), 'relay.db')}`, 1],
    ['postgres_1', await createDatabase(pg.url, 'scale_one'), 1],
    ['postgres_3', await createDatabase(pg.url, 'scale_three'), 3]
  ]
  let port = 18810
  for (const [name, queue, count] of runs) {
    const relays = await startRelays(queue, count, fake.url, port)
    port += count
    await load(relays.urls) // warm-up
    results[name] = await load(relays.urls)
    await relays.stop()
  }
} finally {
  pg.stop()
  await fake.close()
}
console.log(JSON.stringify({ machine: machine(), duration_s: DURATION_S, connections: CONNECTIONS, results }))
console.log(
  JSON.stringify({
    bench: 'relay-scale',
    postgres_1_events_per_s: results.postgres_1?.eventsPerS,
    postgres_3_events_per_s: results.postgres_3?.eventsPerS,
    sqlite_events_per_s: results.sqlite_1?.eventsPerS,
    postgres_1_p99_ms: results.postgres_1?.p99,
    postgres_3_p99_ms: results.postgres_3?.p99,
    sqlite_p99_ms: results.sqlite_1?.p99,
    failed_requests: Object.values(results).reduce((n, r) => n + r.failures, 0)
  })
)
