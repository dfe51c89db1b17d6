/**
 * relay-scale: durable ingest events/s through /v1/batch (100 events a request) with 1 and with 3 relay
 * processes on one PostgreSQL database (a throwaway cluster on 127.0.0.1), and with one relay on SQLite, in
 * one run, with one load generator. Delivery is held (1Flow refuses the project key, so the relays pause
 * and probe) to measure the write path alone. On a 2-core machine the relays, PostgreSQL and the load
 * generator share the cores, so 3 instances show the cost of sharing, not the gain of more machines.
 *
 * Then each PostgreSQL backlog (one project, 5,000 users) is drained by 1 and by 3 relays with 1Flow
 * accepting: `postgres_drain_{1,3}_events_per_s`. Over ingest and drain of the one-relay run, PostgreSQL's
 * CPU (its processes' user + system time, exited backends included) and WAL per event:
 * `pg_cpu_ms_per_1k_events`, `pg_wal_bytes_per_event`.
 *
 * `limiter_sends_per_s`: send slots per second the shared PostgreSQL limiter grants to 3 relays (3 pools, 16
 * senders each, a limit far above what is reached) when each send ends at once: the limiter's own ceiling.
 *
 * `sustained_events_per_s`: one relay on SQLite offered BENCH_SUSTAINED_RATE (40,000) events/s and delivering them
 * to 1Flow at once for BENCH_SUSTAINED_S (60) seconds: events delivered per second over that time;
 * `sustained_ingest_events_per_s` what it accepted, and `sustained_backlog_growth` how many more events were
 * waiting at the end than at the start (≤ 0: delivery kept up with ingest).
 *
 * BENCH_ONLY=ingest,limiter,sustained runs only those parts.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import pg from 'pg'
import { PgQueue, systemClock } from '@oneflow-seg/relay'
import { FakeOneFlowApi } from '@oneflow-seg/testkit/fake-oneflow-api'
import { createDatabase, startThrowawayPostgres } from '@oneflow-seg/testkit/postgres'
import { machine, repoRoot } from './_machine'

const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 8)
const SUSTAINED_S = Number(process.env.BENCH_SUSTAINED_S ?? 60)
const SUSTAINED_RATE = Number(process.env.BENCH_SUSTAINED_RATE ?? 40_000)
const ONLY = new Set((process.env.BENCH_ONLY ?? 'ingest,limiter,sustained').split(','))
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

/** Temporary directories of this run (configs, SQLite queues of hundreds of MB): removed at the end. */
const made: string[] = []
function scratch(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  made.push(dir)
  return dir
}

async function startRelays(
  queue: string,
  count: number,
  apiBaseUrl: string,
  firstPort: number,
  projectApiKey = 'refused-key'
): Promise<{ urls: string[]; stop(): Promise<void> }> {
  const children: ChildProcess[] = []
  const urls: string[] = []
  for (let i = 0; i < count; i++) {
    const port = firstPort + i
    const dir = scratch('relay-scale-')
    const config = join(dir, 'relay.json')
    writeFileSync(
      config,
      JSON.stringify({
        listen: { host: '127.0.0.1', port },
        queue,
        oneflow: { apiBaseUrl },
        sources: [{ name: 'bench', writeKey: WRITE_KEY, projectApiKey }]
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

/** CPU ms used so far by every `postgres` process (live ones, and the backends the postmaster has reaped). */
function pgCpuMs(): number {
  const ticksPerMs = 100 / 1000 // USER_HZ
  let ticks = 0
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let stat: string
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    } catch {
      continue
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
    if (comm !== 'postgres') continue
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const [ppid, utime, stime, cutime, cstime] = [f[1], f[11], f[12], f[13], f[14]].map(Number) as number[]
    ticks += (utime as number) + (stime as number)
    const parent = (() => {
      try {
        const p = readFileSync(`/proc/${ppid}/stat`, 'utf8')
        return p.slice(p.indexOf('(') + 1, p.lastIndexOf(')'))
      } catch {
        return ''
      }
    })()
    if (parent !== 'postgres') ticks += (cutime as number) + (cstime as number)
  }
  return ticks / ticksPerMs
}

async function sql<T = Record<string, unknown>>(url: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query(text)).rows as T[]
  } finally {
    await client.end()
  }
}

const walLsn = async (url: string) =>
  String((await sql<{ lsn: string }>(url, 'SELECT pg_current_wal_lsn() AS lsn'))[0]?.lsn)
const walBytesSince = async (url: string, lsn: string) =>
  Number((await sql<{ n: string }>(url, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${lsn}') AS n`))[0]?.n)
/**
 * Starts `count` relays on the backlog in `queue` with 1Flow accepting, and measures how fast they empty it. The
 * backlog is read from the queue's counters (as the relays' stats() does) on one connection: a count(*) of
 * relay_events every 200 ms cost PostgreSQL 64 ms each on a 140k backlog, about a third of what the drain itself
 * cost, and was counted in pg_cpu_ms_per_1k_events.
 */
async function drain(queue: string, count: number, firstPort: number): Promise<{ events: number; eventsPerS: number }> {
  const client = new pg.Client({ connectionString: queue })
  await client.connect()
  const undelivered = async () =>
    Number((await client.query("SELECT coalesce(sum(n), 0) AS n FROM relay_counts WHERE state <> 'dead'")).rows[0].n)
  try {
    // The held relays' probes of 1Flow (one event each, answered 401) were released until the end of their pause,
    // tens of seconds away, and each keeps its user's later events behind it: made ready, as a resumed lane would
    // send them, so that the drain measures the backlog, not the pause.
    await client.query("UPDATE relay_events SET next_attempt_at = received_at WHERE state = 'pending' AND attempts = 0")
    const events = await undelivered()
    const started = Date.now()
    const before = fake.accepted.length
    const relays = await startRelays(queue, count, fake.url, firstPort)
    while ((await undelivered()) > 0) {
      if (Date.now() - started > 600_000) throw new Error('the backlog did not drain within 10 minutes')
      await new Promise((r) => setTimeout(r, 200))
    }
    // Timed from the first event 1Flow took to the last: starting processes (three take longer than one on a small
    // machine) and opening their queues is not draining.
    let first = Infinity
    let last = 0
    for (let i = before; i < fake.accepted.length; i++) {
      const t = fake.accepted[i]!.at
      if (t < first) first = t
      if (t > last) last = t
    }
    const seconds = (last - first) / 1000
    await relays.stop()
    return { events, eventsPerS: Math.round(events / seconds) }
  } finally {
    await client.end()
  }
}

function load(
  urls: string[],
  duration = DURATION_S,
  eventsPerS?: number
): Promise<{ eventsPerS: number; p99: number; failures: number }> {
  const per = Math.ceil(CONNECTIONS / urls.length)
  return Promise.all(
    urls.map(
      (url) =>
        new Promise<autocannon.Result>((resolve, reject) =>
          autocannon(
            {
              url: `${url}/v1/batch`,
              connections: per,
              duration,
              ...(eventsPerS === undefined ? {} : { overallRate: Math.ceil(eventsPerS / 100 / urls.length) }),
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

/** 3 relays' limiters on one lane, 16 senders each, for 3 s: slots granted per second. */
async function limiterCeiling(url: string): Promise<number> {
  const queues = await Promise.all([0, 1, 2].map(() => PgQueue.open(url)))
  let sends = 0
  const until = Date.now() + 3_000
  try {
    await Promise.all(
      queues.flatMap((q) => {
        const limiter = q.sharedLimiter('bench-lane', 1_000_000, { inFlightMs: 6_000, clock: systemClock })
        return Array.from({ length: 16 }, async () => {
          while (Date.now() < until) {
            const done = await limiter.acquire()
            sends++
            done()
          }
        })
      })
    )
  } finally {
    await Promise.all(queues.map((q) => q.close()))
  }
  return Math.round(sends / 3)
}

/** One relay on SQLite, load at full speed with 1Flow accepting: delivered events/s and the backlog's growth. */
async function sustained(port: number): Promise<{ eventsPerS: number; ingestPerS: number; backlogGrowth: number }> {
  // A 1Flow of its own, whose records are counted and dropped each second (millions of events would not fit).
  const oneflow = await FakeOneFlowApi.start({ apiKeys: ['sustained-key'] })
  let delivered = 0
  const counting = setInterval(() => {
    delivered += oneflow.accepted.length
    oneflow.accepted.length = 0
    oneflow.requests.length = 0
  }, 250)
  const deliveredNow = () => delivered + oneflow.accepted.length
  const relays = await startRelays(
    `sqlite:${join(scratch('relay-scale-sustained-'), 'relay.db')}`,
    1,
    oneflow.url,
    port,
    'sustained-key'
  )
  const [url] = relays.urls as [string]
  const depth = async () =>
    ((await (await fetch(`${url}/health`)).json()) as { queue: { pending: number } }).queue.pending
  try {
    await load(relays.urls, 5) // warm-up
    const [before, deliveredBefore] = [await depth(), deliveredNow()]
    const ingest = await load(relays.urls, SUSTAINED_S, SUSTAINED_RATE)
    const [after, deliveredAfter] = [await depth(), deliveredNow()]
    return {
      eventsPerS: Math.round((deliveredAfter - deliveredBefore) / SUSTAINED_S),
      ingestPerS: ingest.eventsPerS,
      backlogGrowth: after - before
    }
  } finally {
    await relays.stop()
    clearInterval(counting)
    await oneflow.close()
  }
}

const fake = await FakeOneFlowApi.start({ apiKeys: [] })
const postgres = await startThrowawayPostgres()
const results: Record<string, { eventsPerS: number; p99: number; failures: number }> = {}
const drains: Record<string, { events: number; eventsPerS: number }> = {}
let pgCost: { cpuMsPer1k: number; walBytesPerEvent: number } | undefined
let limiterPerS: number | undefined
let steady: { eventsPerS: number; ingestPerS: number; backlogGrowth: number } | undefined
try {
  if (ONLY.has('limiter')) limiterPerS = await limiterCeiling(await createDatabase(postgres.url, 'scale_limiter'))
  if (ONLY.has('sustained')) steady = await sustained(18800)
  const runs: Array<[string, string, number]> = [
    ['sqlite_1', `sqlite:${join(scratch('relay-scale-sqlite-'), 'relay.db')}`, 1],
    ['postgres_1', await createDatabase(postgres.url, 'scale_one'), 1],
    ['postgres_3', await createDatabase(postgres.url, 'scale_three'), 3]
  ]
  let port = 18810
  for (const [name, queue, count] of ONLY.has('ingest') ? runs : []) {
    const cpuBefore = pgCpuMs()
    const lsn = queue.startsWith('postgres') ? await walLsn(queue) : ''
    const relays = await startRelays(queue, count, fake.url, port)
    port += count
    await load(relays.urls) // warm-up
    results[name] = await load(relays.urls)
    await relays.stop()
    if (!queue.startsWith('postgres')) continue
    // 1Flow takes the key now: the same relays' backlog, drained.
    fake.addApiKey('refused-key')
    drains[name] = await drain(queue, count, port)
    port += count
    fake.removeApiKey('refused-key')
    if (name === 'postgres_1')
      pgCost = {
        cpuMsPer1k: Math.round(((pgCpuMs() - cpuBefore) / drains[name].events) * 1000),
        walBytesPerEvent: Math.round((await walBytesSince(queue, lsn)) / drains[name].events)
      }
  }
} finally {
  postgres.stop()
  await fake.close()
  for (const dir of made) rmSync(dir, { recursive: true, force: true })
}
console.log(
  JSON.stringify({
    machine: machine(),
    duration_s: DURATION_S,
    connections: CONNECTIONS,
    results,
    drains,
    pgCost,
    steady
  })
)
console.log(
  JSON.stringify({
    bench: 'relay-scale',
    postgres_1_events_per_s: results.postgres_1?.eventsPerS,
    postgres_3_events_per_s: results.postgres_3?.eventsPerS,
    sqlite_events_per_s: results.sqlite_1?.eventsPerS,
    postgres_1_p99_ms: results.postgres_1?.p99,
    postgres_3_p99_ms: results.postgres_3?.p99,
    sqlite_p99_ms: results.sqlite_1?.p99,
    postgres_drain_1_events_per_s: drains.postgres_1?.eventsPerS,
    postgres_drain_3_events_per_s: drains.postgres_3?.eventsPerS,
    pg_cpu_ms_per_1k_events: pgCost?.cpuMsPer1k,
    pg_wal_bytes_per_event: pgCost?.walBytesPerEvent,
    limiter_sends_per_s: limiterPerS,
    sustained_events_per_s: steady?.eventsPerS,
    sustained_ingest_events_per_s: steady?.ingestPerS,
    sustained_backlog_growth: steady?.backlogGrowth,
    failed_requests: Object.values(results).reduce((n, r) => n + r.failures, 0)
  })
)
