/**
 * relay-pg-cost: what one event costs PostgreSQL on the queue's own path, without HTTP or a relay process.
 * EVENTS (100,000) events of 5,000 users are enqueued in requests of 100 (100 at once), then 4 workers lease 500
 * and complete them until none is left, as deliverers do. Reported per phase: the PostgreSQL backends' CPU (from
 * /proc) per 1,000 events and the WAL written per event. The delivery is measured twice, in fresh databases: once
 * right after the burst (the table not yet analyzed: a new queue's first minute), once after `ANALYZE`, and once
 * after `ANALYZE` while another session holds a snapshot open (an idle REPEATABLE READ transaction, as a long
 * pg_dump or analytics query does): `delivery_events_per_s_snapshot_held`.
 * `RELAY_MODULE=/path/to/relay/dist/index.js pnpm bench relay-pg-cost` measures another build (before/after).
 */
import { readdirSync, readFileSync } from 'node:fs'
import pg from 'pg'
import { createDatabase, startThrowawayPostgres } from '@oneflow-seg/testkit/postgres'
import { machine } from './_machine'

const EVENTS = Number(process.env.EVENTS ?? 100_000)
const USERS = 5_000
const relay = (await import(process.env.RELAY_MODULE ?? '@oneflow-seg/relay')) as typeof import('@oneflow-seg/relay')

/** CPU time (ms) of every PostgreSQL backend process now alive (the pool keeps its connections open). */
function backendCpuMs(): number {
  let ticks = 0
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== 'postgres') continue
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      ticks += Number(f[11]) + Number(f[12])
    } catch {
      // the process ended meanwhile
    }
  }
  return ticks * 10 // USER_HZ = 100
}

async function run(adminUrl: string, name: string, analyze: boolean, holdSnapshot = false) {
  const url = await createDatabase(adminUrl, name)
  const queue = await relay.PgQueue.open(url)
  const admin = new pg.Client(url)
  await admin.connect()
  const lsn = async () => String((await admin.query('SELECT pg_current_wal_insert_lsn() AS l')).rows[0].l)
  const walPerEvent = async (from: string) =>
    Number((await admin.query('SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1) AS d', [from])).rows[0].d) /
    EVENTS
  try {
    const now = Date.now()
    let cpu = backendCpuMs()
    let from = await lsn()
    for (let start = 0; start < EVENTS; start += 10_000)
      await Promise.all(
        Array.from({ length: 100 }, (_, r) =>
          queue.enqueue(
            Array.from({ length: 100 }, (_, i) => {
              const n = start + r * 100 + i
              const userId = `user-${n % USERS}`
              const body = JSON.stringify({
                type: 'track',
                event: 'Cost',
                userId,
                properties: { plan: 'pro', seats: i }
              })
              return {
                messageId: `cost-${n}`,
                sourceName: 'bench',
                projectId: 'p',
                userKey: userId,
                body,
                receivedAt: now
              }
            })
          )
        )
      )
    const ingest = { cpuMsPer1k: ((backendCpuMs() - cpu) / EVENTS) * 1000, walBytesPerEvent: await walPerEvent(from) }
    if (analyze) await admin.query('ANALYZE relay_events')
    // The admin session's snapshot keeps every row version the delivery replaces or deletes from being removed.
    if (holdSnapshot) await admin.query('BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM relay_schema')
    cpu = backendCpuMs()
    from = await lsn()
    const started = Date.now()
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (;;) {
          const jobs = await queue.lease('p', 500, 60_000, Date.now())
          if (jobs.length === 0) return
          await queue.complete(jobs)
        }
      })
    )
    const delivery = {
      cpuMsPer1k: ((backendCpuMs() - cpu) / EVENTS) * 1000,
      walBytesPerEvent: await walPerEvent(from),
      eventsPerS: EVENTS / ((Date.now() - started) / 1000)
    }
    if (holdSnapshot) await admin.query('ROLLBACK')
    if ((await queue.stats(Date.now())).pending !== 0) throw new Error('events left undelivered')
    return { ingest, delivery }
  } finally {
    await admin.end()
    await queue.close()
  }
}

const postgres = await startThrowawayPostgres()
try {
  const fresh = await run(postgres.url, 'cost_fresh', false)
  console.log(JSON.stringify({ table: 'not analyzed', ...fresh }))
  const analyzed = await run(postgres.url, 'cost_analyzed', true)
  console.log(JSON.stringify({ table: 'analyzed', ...analyzed }))
  const snapshot = await run(postgres.url, 'cost_snapshot', true, true)
  console.log(JSON.stringify({ table: 'analyzed, a snapshot held elsewhere', ...snapshot }))
  const round = (n: number) => Math.round(n)
  console.log(
    JSON.stringify({
      bench: 'relay-pg-cost',
      machine: machine(),
      events: EVENTS,
      ingest_pg_cpu_ms_per_1k_events: round(analyzed.ingest.cpuMsPer1k),
      ingest_wal_bytes_per_event: round(analyzed.ingest.walBytesPerEvent),
      delivery_pg_cpu_ms_per_1k_events: round(analyzed.delivery.cpuMsPer1k),
      delivery_pg_cpu_ms_per_1k_events_unanalyzed: round(fresh.delivery.cpuMsPer1k),
      delivery_wal_bytes_per_event: round(analyzed.delivery.walBytesPerEvent),
      delivery_events_per_s: round(analyzed.delivery.eventsPerS),
      delivery_events_per_s_unanalyzed: round(fresh.delivery.eventsPerS),
      delivery_events_per_s_snapshot_held: round(snapshot.delivery.eventsPerS)
    })
  )
} finally {
  postgres.stop()
}
