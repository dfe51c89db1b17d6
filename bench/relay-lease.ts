/**
 * relay-lease: what one lease costs while a user's backlog is blocked. One user's first event waits for a retry
 * (1Flow failed it) and 100,000 more of that user's events wait behind it; 5,000 other users' events arrive
 * after them. Leases of 500 are taken (and completed) until the other users' events are out, on SQLite and on
 * PostgreSQL (a throwaway cluster on 127.0.0.1); each lease's wall time is what the relay's event loop spends
 * on it. `RELAY_MODULE=/path/to/relay/dist/index.js pnpm bench relay-lease` measures another build (before/after).
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Queue } from '@oneflow-seg/relay'
import { createDatabase, startThrowawayPostgres } from '@oneflow-seg/testkit/postgres'
import { machine, median } from './_machine'

const BLOCKED = 100_000
const OTHERS = 5_000
const LEASE = 500
const T0 = Date.now()

const relay = (await import(process.env.RELAY_MODULE ?? '@oneflow-seg/relay')) as typeof import('@oneflow-seg/relay')

async function measure(queue: Queue) {
  const body = JSON.stringify({ type: 'track', event: 'Backlog', userId: 'blocked', properties: { plan: 'pro' } })
  const row = (i: number, userKey: string) => ({
    messageId: `lease-${i}`,
    sourceName: 'bench',
    projectId: 'p',
    userKey,
    body,
    receivedAt: T0
  })
  await queue.enqueue([row(0, 'blocked')])
  const [head] = await queue.lease('p', 1, 600_000, T0)
  await queue.retry([head!.id], T0 + 3_600_000, '1Flow answered 503', T0)
  for (let start = 1; start <= BLOCKED; start += 10_000)
    await queue.enqueue(Array.from({ length: 10_000 }, (_, j) => row(start + j, 'blocked')))
  await queue.enqueue(Array.from({ length: OTHERS }, (_, j) => row(BLOCKED + 1 + j, `user-${j}`)))
  const times: number[] = []
  let others = 0
  // As the deliverer does: lease, deliver, lease again (an empty lease is tried again on the next tick).
  while (others < OTHERS && times.length < 5_000) {
    const started = process.hrtime.bigint()
    const jobs = await queue.lease('p', LEASE, 600_000, T0 + 1_000)
    times.push(Number(process.hrtime.bigint() - started) / 1e6)
    others += jobs.length
    if (jobs.length > 0) await queue.complete(jobs.map((j) => j.id))
  }
  // With nothing ready but the blocked backlog: what every further lease of that lane costs.
  const idle: number[] = []
  for (let i = 0; i < 20; i++) {
    const started = process.hrtime.bigint()
    await queue.lease('p', LEASE, 600_000, T0 + 1_000)
    idle.push(Number(process.hrtime.bigint() - started) / 1e6)
  }
  await queue.close()
  const round = (ms: number) => Math.round(ms * 100) / 100
  const total = times.reduce((a, b) => a + b, 0)
  return {
    leases: times.length,
    total_ms: round(total),
    median_ms: round(median(times)),
    max_ms: round(Math.max(...times)),
    blocked_only_median_ms: round(median(idle)),
    delivered: others
  }
}

const sqlite = await measure(new relay.SqliteQueue(join(mkdtempSync(join(tmpdir(), 'relay-lease-')), 'relay.db')))
console.log(JSON.stringify({ driver: 'sqlite', ...sqlite }))
const pg = await startThrowawayPostgres()
let postgres
try {
  postgres = await measure(await relay.PgQueue.open(await createDatabase(pg.url, 'relay_lease')))
  console.log(JSON.stringify({ driver: 'postgres', ...postgres }))
} finally {
  pg.stop()
}
console.log(
  JSON.stringify({
    bench: 'relay-lease',
    blocked_backlog: BLOCKED,
    sqlite_leases_to_deliver_others: sqlite.leases,
    sqlite_lease_total_ms: sqlite.total_ms,
    sqlite_lease_median_ms: sqlite.median_ms,
    sqlite_lease_max_ms: sqlite.max_ms,
    sqlite_blocked_only_lease_ms: sqlite.blocked_only_median_ms,
    postgres_leases_to_deliver_others: postgres.leases,
    postgres_lease_total_ms: postgres.total_ms,
    postgres_lease_median_ms: postgres.median_ms,
    postgres_lease_max_ms: postgres.max_ms,
    postgres_blocked_only_lease_ms: postgres.blocked_only_median_ms,
    ...machine()
  })
)
