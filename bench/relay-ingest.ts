/**
 * relay-ingest: durable events/s through the relay's /v1/batch (100 events a request, 200 only after the
 * FULL-synchronous commit, delivery to a stand-in 1Flow running meanwhile) against two bare node:http servers in
 * the same run, same machine, same load generator (autocannon): one that parses the same JSON and answers 200
 * without storing it (`ratio`), and the physical floor of durable ingest here — one that appends each body to one
 * file and fdatasyncs once per group of concurrent requests before answering (`floor_ratio`). Then single-event
 * requests: req/s and p99 latency.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { FakeOneFlowApi } from '@oneflow-seg/testkit/fake-oneflow-api'
import { machine, repoRoot } from './_machine'

const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 8)
const CONNECTIONS = 32
const WRITE_KEY = 'bench-write-key'
const AUTH = `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`

const root = repoRoot()
const relayCli = createRequire(join(root, 'bench', 'package.json'))
  .resolve('@oneflow-seg/relay/package.json')
  .replace(/package\.json$/, 'dist/cli.cjs')

function spawnServer(args: string[]): ChildProcess {
  return spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] })
}

async function waitFor(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (
      await fetch(url).then(
        () => true,
        () => false
      )
    )
      return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`nothing answered at ${url}`)
}

let seq = 0
function batchBody(): string {
  const base = seq
  seq += 100
  const batch = Array.from({ length: 100 }, (_, i) => ({
    type: 'track',
    event: 'Bench Event',
    userId: `user-${(base + i) % 5000}`,
    messageId: `bench-${base + i}`,
    timestamp: '2026-01-01T00:00:00.000Z',
    properties: { plan: 'pro', seats: i, path: '/pricing', referrer: 'https://example.com/' }
  }))
  return JSON.stringify({ batch, sentAt: '2026-01-01T00:00:01.000Z' })
}

function singleBody(): string {
  const id = seq++
  return JSON.stringify({
    event: 'Bench Event',
    userId: `user-${id % 5000}`,
    messageId: `bench-${id}`,
    properties: { plan: 'pro' }
  })
}

function load(url: string, makeBody: () => string): Promise<autocannon.Result> {
  return new Promise((resolve, reject) =>
    autocannon(
      {
        url,
        connections: CONNECTIONS,
        duration: DURATION_S,
        requests: [
          {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: AUTH },
            setupRequest: (req) => ({ ...req, body: makeBody() })
          }
        ]
      },
      (error, result) => (error ? reject(error) : resolve(result))
    )
  )
}

const fake = await FakeOneFlowApi.start()
const dir = mkdtempSync(join(tmpdir(), 'relay-ingest-'))
const relayPort = 18787
const config = join(dir, 'relay.json')
writeFileSync(
  config,
  JSON.stringify({
    listen: { host: '127.0.0.1', port: relayPort },
    queue: 'sqlite:./relay.db',
    oneflow: { apiBaseUrl: fake.url },
    sources: [{ name: 'bench', writeKey: WRITE_KEY, projectApiKey: 'test-project-key' }]
  })
)
// BENCH_CPU_PROF=<dir>: the relay writes a V8 CPU profile there when it stops (where the time goes).
const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []
const relay = spawn(process.execPath, [...profile, relayCli, 'start', '--config', config], {
  stdio: ['ignore', 'ignore', 'inherit'],
  env: { ...process.env, LOG_LEVEL: 'warn' }
})
// Durable floor: bodies appended to one file; one fdatasync per group of requests that arrived meanwhile.
const floorPort = 18791
const floorFile = join(dir, 'floor.log')
const floor = spawnServer([
  '-e',
  `const fs = require('node:fs'); const fd = fs.openSync(${JSON.stringify(floorFile)}, 'a'); let waiting = []; let busy = false;
   function commit() { if (busy || waiting.length === 0) return; busy = true; const group = waiting; waiting = [];
     fs.write(fd, Buffer.concat(group.map((w) => w.body)), (e) => { if (e) throw e; fs.fdatasync(fd, (e2) => { if (e2) throw e2;
       for (const w of group) { w.res.writeHead(200, { 'content-type': 'application/json' }); w.res.end('{"success":true}') } busy = false; commit() }) }) }
   require('node:http').createServer((req, res) => { const chunks = []; req.on('data', (c) => chunks.push(c)); req.on('end', () => { waiting.push({ body: Buffer.concat(chunks), res }); commit() }) }).listen(${floorPort}, '127.0.0.1')`
])
const barePort = 18790
const bare = spawnServer([
  '-e',
  `require('node:http').createServer((req, res) => { let b = ''; req.setEncoding('utf8'); req.on('data', (c) => (b += c)); req.on('end', () => { if (b) JSON.parse(b); res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"success":true}') }) }).listen(${barePort}, '127.0.0.1')`
])
try {
  await waitFor(`http://127.0.0.1:${relayPort}/health/live`)
  await waitFor(`http://127.0.0.1:${barePort}/`)
  await waitFor(`http://127.0.0.1:${floorPort}/`)
  // Warm both up, then measure.
  const warm = await load(`http://127.0.0.1:${relayPort}/v1/batch`, batchBody)
  const relayBatch = await load(`http://127.0.0.1:${relayPort}/v1/batch`, batchBody)
  // The relay delivers what it took before the other servers are measured: a relay still draining its backlog
  // would take CPU from them (and from its own single-event phase).
  const drainStarted = Date.now()
  await fake.waitFor((accepted) => accepted.length >= (warm['2xx'] + relayBatch['2xx']) * 100, 300_000)
  const drainAfterS = (Date.now() - drainStarted) / 1000
  const bareBatch = await load(`http://127.0.0.1:${barePort}/v1/batch`, batchBody)
  const floorBatch = await load(`http://127.0.0.1:${floorPort}/v1/batch`, batchBody)
  const single = await load(`http://127.0.0.1:${relayPort}/v1/track`, singleBody)
  const ok = (r: autocannon.Result) => r.non2xx === 0 && r.errors === 0
  if (!ok(relayBatch) || !ok(single))
    throw new Error(
      `the relay refused requests: ${relayBatch.non2xx + single.non2xx} non-2xx, ${relayBatch.errors + single.errors} errors`
    )
  const batchEvents = relayBatch.requests.average * 100
  const limitEvents = bareBatch.requests.average * 100
  const floorEvents = floorBatch.requests.average * 100
  console.log(
    JSON.stringify({
      machine: machine(),
      duration_s: DURATION_S,
      connections: CONNECTIONS,
      batch_p99_ms: relayBatch.latency.p99,
      drain_after_batch_s: Math.round(drainAfterS * 10) / 10,
      bare_batch_p99_ms: bareBatch.latency.p99,
      single_p50_ms: single.latency.p50,
      delivered_to_fake: fake.accepted.length
    })
  )
  console.log(
    JSON.stringify({
      bench: 'relay-ingest',
      batch_events_per_s: Math.round(batchEvents),
      limit_events_per_s: Math.round(limitEvents),
      ratio: Math.round((batchEvents / limitEvents) * 100) / 100,
      durable_floor_events_per_s: Math.round(floorEvents),
      floor_ratio: Math.round((batchEvents / floorEvents) * 100) / 100,
      single_req_per_s: Math.round(single.requests.average),
      single_p99_ms: single.latency.p99
    })
  )
} finally {
  relay.kill('SIGTERM')
  bare.kill('SIGKILL')
  floor.kill('SIGKILL')
  await new Promise((r) => relay.once('exit', r))
  await fake.close()
  // The queue and the floor's file take hundreds of MB per run.
  rmSync(dir, { recursive: true, force: true })
}
