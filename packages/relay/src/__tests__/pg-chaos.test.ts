/**
 * Three relays on one PostgreSQL under load, with everything going wrong at once, as issue reports saw it go
 * wrong on loaded machines: one relay kill -9'd every few seconds (and started again), another frozen (SIGSTOP)
 * past its lease and its claims on the project's buckets (another relay takes one over meanwhile) and then resumed, PostgreSQL itself crashing and coming back, 1Flow answering slowly, and a CPU
 * hog beside it all. At the end: every acknowledged event reached 1Flow, nothing is left pending, held or leased,
 * each user's events first arrived in the order they were sent, every repeat is explained by a fault of its own
 * (an event arrives three times only after two faults) and no fault repeats more than one relay had in flight,
 * and 1Flow never saw more than the one shared limit per second. The PostgreSQL restart itself repeats next to
 * nothing (each owner takes its buckets back with what it has in flight); the issue's "duplicates within 1 % of what was
 * acknowledged" is not asserted: one kill -9 while a 500-event batch is in flight repeats 500 events, several
 * percent of a run this size (docs/relay-queue.md, "The chaos test").
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import postgres from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { createDatabase, startThrowawayPostgres, type ThrowawayPostgres } from '@oneflow-seg/testkit/postgres'
import { post, tempDir, until } from './helpers'
import { freePort, runCli, startRelayProcess, writeConfig, type RelayProcess } from './process'
import { projectIdOf } from '../config'
import { DEFAULT_BUCKETS, lanesOf } from '../queue/buckets'
import { lockKey } from '../queue/pg-queue'

const WRITE_KEY = 'wk_pg_chaos_0123456789'
const LIMIT = 2
const CONCURRENCY = 4
const REQUEST_TIMEOUT_MS = 2000
/** A relay's lease: 3 × requestTimeoutMs + 5 s (deliverer.ts). The frozen relay sleeps past it. */
const LEASE_MS = 3 * REQUEST_TIMEOUT_MS + 5000
const USERS = 24
const LOAD_MS = 30_000

let pg: ThrowawayPostgres
let fake: FakeOneFlowApi
let hog: ChildProcess | undefined
beforeAll(async () => {
  pg = await startThrowawayPostgres()
  fake = await FakeOneFlowApi.start({ latencyMs: 300 })
}, 60_000)
afterAll(async () => {
  hog?.kill('SIGKILL')
  await fake?.close()
  pg?.stop()
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Queries on one connection of the test's own, opened again after a failure (the database may be crashed): a new
 * connection per look costs a backend's start, which a loaded machine can make slower than the look's timeout.
 * A query gives undefined while the database does not answer.
 */
function observer(url: string) {
  let client: Promise<postgres.Client> | undefined
  const connect = async () => {
    const c = new postgres.Client({ connectionString: url, connectionTimeoutMillis: 5000, query_timeout: 5000 })
    c.on('error', () => undefined)
    await c.connect()
    return c
  }
  return {
    async query(text: string): Promise<Array<Record<string, unknown>> | undefined> {
      try {
        client ??= connect()
        // (Several statements answer with a result each: the last one's rows.)
        const results = [(await (await client).query(text)) as postgres.QueryResult | postgres.QueryResult[]].flat()
        return results[results.length - 1]!.rows as Array<Record<string, unknown>>
      } catch {
        const c = client
        client = undefined
        void c?.then((x) => x.end()).catch(() => undefined)
        return undefined
      }
    },
    async close(): Promise<void> {
      await (await client?.catch(() => undefined))?.end().catch(() => undefined)
    }
  }
}
type Observer = ReturnType<typeof observer>

/** The project's lanes: its buckets (docs/relay-queue.md, "Buckets"), each with an owner of its own. */
const LANES = lanesOf(projectIdOf('test-project-key'), DEFAULT_BUCKETS)

/** Per relay process id, the project's buckets it owns (its claims' connection is named after it). */
async function bucketOwners(db: Observer): Promise<Map<number, string[]>> {
  const rows = await db.query(
    `SELECT a.application_name AS name, l.objid::bigint AS objid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'oneflow-relay owner %'`
  )
  const out = new Map<number, string[]>()
  for (const r of rows ?? []) {
    const lane = LANES.find((l) => lockKey(`leasing:${l}`) >>> 0 === Number(r.objid))
    if (lane === undefined) continue
    const pid = Number(String(r.name).split(' ').pop())
    out.set(pid, [...(out.get(pid) ?? []), lane])
  }
  return out
}

/**
 * Every change of a lane's owner epoch from now on, with when PostgreSQL made it (a trigger of the test's: what the
 * database did, however late the test looks).
 */
async function recordEpochs(db: Observer): Promise<void> {
  const done = await db.query(`
    CREATE TABLE chaos_epochs (lane TEXT NOT NULL, epoch BIGINT NOT NULL, at_ms DOUBLE PRECISION NOT NULL);
    CREATE FUNCTION chaos_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO chaos_epochs VALUES (NEW.project_id, NEW.epoch, extract(epoch FROM clock_timestamp()) * 1000);
      RETURN NULL;
    END $$;
    CREATE TRIGGER chaos_epoch AFTER INSERT OR UPDATE OF epoch ON relay_lanes FOR EACH ROW EXECUTE FUNCTION chaos_epoch()`)
  if (!done) throw new Error('could not add the epoch log')
}

/**
 * Which relay process each connection to 1Flow comes from: its local port, mapped to the process holding the socket
 * (read from /proc every 100 ms while the connections are open; a request waits 300 ms for its answer). A relay's
 * port is what the fake 1Flow records of each request.
 */
function connectionOwners(fakePort: number, pids: () => number[]) {
  const owner = new Map<number, number>()
  const look = () => {
    // Socket inode → local port, for connections to the fake.
    const byInode = new Map<string, number>()
    for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f.length < 10 || parseInt(f[2]!.split(':')[1]!, 16) !== fakePort) continue
      byInode.set(f[9]!, parseInt(f[1]!.split(':')[1]!, 16))
    }
    for (const pid of pids()) {
      let fds: string[] = []
      try {
        fds = readdirSync(`/proc/${pid}/fd`)
      } catch {
        continue
      }
      for (const fd of fds) {
        try {
          const port = byInode.get(/^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1] ?? '')
          if (port !== undefined) owner.set(port, pid)
        } catch {
          // Closed meanwhile.
        }
      }
    }
  }
  const timer = setInterval(look, 100)
  return { owner, stop: () => clearInterval(timer) }
}

const alive = (r: RelayProcess) => r.child.exitCode === null && r.child.signalCode === null

it('3 relays, one killed every 6 s, an owner of buckets frozen past its claim and lease, PostgreSQL restarted, slow 1Flow, CPU hog: nothing lost or stranded, order kept, few duplicates', async () => {
  hog = spawn('sh', ['-c', 'exec yes > /dev/null'], { stdio: 'ignore' })
  const db = await createDatabase(pg.url, 'pg_chaos')
  const ports = await Promise.all([freePort(), freePort(), freePort()])
  const files = ports.map((port) =>
    writeConfig(
      {
        listen: { host: '127.0.0.1', port },
        queue: db,
        oneflow: {
          apiBaseUrl: fake.url,
          maxRequestsPerSecond: LIMIT,
          concurrency: CONCURRENCY,
          requestTimeoutMs: REQUEST_TIMEOUT_MS
        },
        sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: 'test-project-key' }]
      },
      tempDir()
    )
  )
  const relays: RelayProcess[] = await Promise.all(ports.map((port, i) => startRelayProcess(files[i]!, port)))
  const connections = connectionOwners(Number(new URL(fake.url).port), () =>
    relays.map((r) => r.child.pid).filter((pid): pid is number => pid !== undefined)
  )
  /** Relay processes killed or frozen, and when: a repeat of what one of them sent before is excused (see below). */
  const struckPids: Array<{ pid: number; at: number }> = []
  // (Started, the relays have made their tables.)
  const watch = observer(db)
  await recordEpochs(watch)

  // Load: two senders, each with its own users, one batch at a time (so each user's order is the send order).
  const acked = new Set<string>()
  const seq = new Map<string, number>()
  let stopLoad = false
  const sender = async (first: number) => {
    let turn = first
    while (!stopLoad) {
      const target = relays[turn++ % relays.length]!
      if (!alive(target) || target.child.signalCode !== null) {
        await sleep(20)
        continue
      }
      const batch = Array.from({ length: 20 }, (_, i) => {
        const user = `u${(first + 2 * (i % (USERS / 2))) % USERS}`
        const n = seq.get(user) ?? 0
        seq.set(user, n + 1)
        const id = `${user}:${n}`
        return { type: 'track', event: 'Chaos', userId: user, messageId: id, properties: { id, n } }
      })
      const res = await Promise.race([
        post(target.url, '/v1/batch', { batch }, WRITE_KEY).catch(() => undefined),
        sleep(5000).then(() => undefined) // a frozen relay never answers: go on without it
      ])
      if (res?.status === 200) for (const e of batch) acked.add(e.messageId)
      else await sleep(100)
    }
  }
  const senders = [sender(0), sender(1)]

  // The faults, on a schedule across the load.
  const started = Date.now()
  const at = (ms: number) => sleep(Math.max(0, started + ms - Date.now()))
  /** When each fault struck: a request 1Flow saw up to one timeout before it may have been answered unrecorded. */
  const faults: Array<{ kind: string; at: number; until: number }> = []
  const struck = (kind: string, until = Date.now()) => faults.push({ kind, at: Date.now(), until })
  /** When PostgreSQL answered again after its crash. */
  let back!: (t: number) => void
  const restarted = new Promise<number>((resolve) => (back = resolve))
  const killer = (async () => {
    for (let t = 6000; t < LOAD_MS; t += 6000) {
      // Not while the relays take their buckets back after PostgreSQL's restart (within a second or two): a kill then
      // repeats what the restart left unrecorded, two faults at once that the check of repeats below cannot tell apart.
      const settled = t > 18_000 ? (await restarted) - started + 3000 : 0
      await at(Math.max(t, settled))
      struck('kill')
      struckPids.push({ pid: relays[0]!.child.pid as number, at: Date.now() })
      relays[0]!.child.kill('SIGKILL')
      await relays[0]!.exited
      await sleep(500)
      // Started on a loaded machine beside a database under fault: it may take a while.
      relays[0] = await startRelayProcess(files[0]!, ports[0]!, {}, undefined, 60_000)
    }
  })()
  // A relay owning buckets of the project, among those not being killed, is frozen past its claim (PostgreSQL ends
  // its session after idle_session_timeout and another relay takes a bucket over while it sleeps) and past its
  // lease, then resumed: what it then writes must change nothing.
  /** The buckets the relay frozen owned then; when it was frozen and resumed. */
  let frozenLanes: string[] = []
  let frozenPid: number | undefined
  let frozenAt = 0
  let thawedAt = 0
  const debugSamples: unknown[] = []
  const freezer = (async () => {
    await at(5000)
    let frozen: RelayProcess | undefined
    for (let i = 0; i < 50 && !frozen; i++) {
      const owners = await bucketOwners(watch)
      frozen = [relays[1]!, relays[2]!].find((r) => (owners.get(r.child.pid as number) ?? []).length > 0)
      frozenLanes = frozen ? (owners.get(frozen.child.pid as number) as string[]) : []
      if (!frozen) await sleep(200)
    }
    frozen ??= relays[1]!
    frozenPid = frozen.child.pid
    frozenAt = Date.now()
    struck('freeze')
    struckPids.push({ pid: frozen.child.pid as number, at: Date.now() })
    frozen.child.kill('SIGSTOP')
    const thawAt = Date.now() + LEASE_MS + 4000
    while (Date.now() < thawAt) {
      // What each session of the database did meanwhile, to tell why a takeover did not come (printed if so).
      const rows = await watch.query(
        `SELECT a.pid, a.application_name, a.state, a.wait_event_type, a.wait_event,
        now() - a.query_start AS running, now() - a.xact_start AS xact, left(a.query, 120) AS q,
        (SELECT string_agg(l.mode || ':' || l.objid || ':' || l.granted, ',') FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory') AS locks
        FROM pg_stat_activity a WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()`
      )
      debugSamples.push({ t: Date.now() - started, rows })
      await sleep(500)
    }
    frozen.child.kill('SIGCONT')
    thawedAt = Date.now()
  })()
  // After the frozen relay is resumed: a crash ends every claim, and the takeover after it must not pass for one
  // that came while the owner slept.
  const database = (async () => {
    await freezer
    await at(20_000)
    const crashed = Date.now()
    pg.crash()
    await sleep(3000)
    pg.restart()
    back(Date.now())
    faults.push({ kind: 'postgres', at: crashed, until: Date.now() })
  })()
  await at(LOAD_MS)
  stopLoad = true
  await Promise.all([...senders, killer, freezer, database])
  // The hog goes with the load: the tests running beside this one in CI share the machine.
  hog.kill('SIGKILL')
  // Load enough to matter (on a CI machine under its own load, 2,000–15,000 acknowledged events).
  expect(acked.size).toBeGreaterThan(500)

  const loadEnded = Date.now()
  // Everything acknowledged arrives, and nothing stays behind in the queue.
  const arrivals = () => fake.accepted.map((m) => String((m.body.properties as { id: string }).id))
  await until(
    () => {
      const seen = new Set(arrivals())
      return [...acked].every((id) => seen.has(id))
    },
    `all ${acked.size} acknowledged events at 1Flow`,
    180_000
  )
  await until(
    () => {
      const r = runCli(['stats', '--config', files[2]!])
      if (r.status !== 0) return false
      const s = JSON.parse(r.stdout) as { pending: number; leased: number; retrying: number }
      return s.pending === 0 && s.leased === 0 && s.retrying === 0
    },
    'an empty queue (nothing pending, held or leased)',
    60_000
  )

  const drainedMs = Date.now() - loadEnded
  const delivered = arrivals()
  const times = new Map<string, number>()
  for (const id of delivered) times.set(id, (times.get(id) ?? 0) + 1)
  const duplicates = delivered.length - times.size
  const thrice = [...times].filter(([, n]) => n >= 3)
  // Every repeat must be explained by a fault of its own: the send before it reached 1Flow while a fault could
  // have kept its answer from being recorded (a relay killed or frozen, the database down). An event sent three
  // times needs two faults. A repeat no fault explains (a lease that ran out while its request was still being
  // sent, a resumed relay sending what another had taken over) is a bug, however few. And a fault can repeat at
  // most what one relay had in flight: `concurrency` requests of up to 500 events.
  const sends = new Map<string, number[]>()
  /** Per event, who sent each copy (the relay process, when known). */
  const sentBy = new Map<string, Array<number | undefined>>()
  connections.stop()
  for (const m of fake.accepted) {
    const id = String((m.body.properties as { id: string }).id)
    sends.set(id, [...(sends.get(id) ?? []), m.at])
    sentBy.set(id, [
      ...(sentBy.get(id) ?? []),
      m.fromPort === undefined ? undefined : connections.owner.get(m.fromPort)
    ])
  }
  const window = (f: (typeof faults)[number], at: number) =>
    at >= f.at - REQUEST_TIMEOUT_MS - 1000 && at <= f.until + 1000
  const repeatsPerFault = new Map<(typeof faults)[number] | 'unexplained', number>()
  for (const at of [...sends.values()].filter((s) => s.length > 1)) {
    const used = new Set<(typeof faults)[number]>()
    for (const t of at.slice(0, -1)) {
      const fault = faults.find((f) => !used.has(f) && window(f, t))
      if (fault) used.add(fault)
      repeatsPerFault.set(fault ?? 'unexplained', (repeatsPerFault.get(fault ?? 'unexplained') ?? 0) + 1)
    }
  }
  // Repeats only the PostgreSQL restart explains (their earlier send in no other fault's window): each owner takes
  // its buckets back with what it has in flight, so only a bucket with a write in doubt at the crash repeats any
  // (docs/relay-queue.md, "A claim lost and taken back").
  const onlyRestart = [...sends.values()].filter(
    (s) => s.length > 1 && s.slice(0, -1).some((t) => faults.every((f) => (f.kind === 'postgres') === window(f, t)))
  ).length
  // The bound, "duplicates within 1 % of what was acknowledged", for the repeats the relays can avoid: those
  // not excused by the sender of the copy before having been killed or frozen while that request could still be
  // awaiting its answer (1Flow took a batch from a relay that died before it could record the answer: at least once,
  // that goes out again). A copy whose sender was not seen (its connection closed before /proc was read) is excused
  // as the per-fault check does: by a kill or freeze in its window.
  let unexcused = 0
  let unknownSender = 0
  for (const [id, at] of sends) {
    const by = sentBy.get(id) ?? []
    for (let i = 0; i + 1 < at.length; i++) {
      const pid = by[i]
      if (pid === undefined) unknownSender++
      const excused =
        pid === undefined
          ? faults.some((f) => f.kind !== 'postgres' && window(f, at[i]!))
          : struckPids.some((s) => s.pid === pid && s.at >= at[i]! - 1000 && s.at <= at[i]! + REQUEST_TIMEOUT_MS + 1000)
      if (!excused) unexcused++
    }
  }
  const causes = Object.fromEntries(
    [...repeatsPerFault].map(([f, n]) => [f === 'unexplained' ? f : `${f.kind}@${f.at - started}ms`, n])
  )
  // Per user, first arrivals of acknowledged events in the order sent. (A batch given up on — a frozen relay does
  // not answer — may still be taken when that relay wakes, after later ones: never acknowledged, it has no place
  // in the order, as a Segment client would send it again.)
  const firstOrder = new Map<string, number[]>()
  const seen = new Set<string>()
  for (const id of delivered) {
    if (seen.has(id) || !acked.has(id)) continue
    seen.add(id)
    const [user, n] = id.split(':') as [string, string]
    firstOrder.set(user, [...(firstOrder.get(user) ?? []), Number(n)])
  }
  const outOfOrder = [...firstOrder].filter(([, ns]) => ns.some((n, i) => i > 0 && n < ns[i - 1]!))
  // Another relay took a bucket of the frozen one over while it slept: an epoch change of one of its buckets from a
  // second after the freeze (a takeover the frozen relay itself had in flight could still commit at once) until it
  // was resumed.
  let logged: Array<Record<string, unknown>> | undefined
  for (let i = 0; i < 10 && !logged; i++) {
    logged = await watch.query('SELECT lane, epoch, at_ms FROM chaos_epochs ORDER BY at_ms')
    if (!logged) await sleep(500)
  }
  const epochs = (logged ?? []).map((r) => ({ lane: String(r.lane), epoch: Number(r.epoch), at: Number(r.at_ms) }))
  const takeover = epochs.find((e) => frozenLanes.includes(e.lane) && e.at >= frozenAt + 1000 && e.at <= thawedAt)
  const summary = {
    acked: acked.size,
    delivered: delivered.length,
    duplicates,
    causes,
    onlyRestart,
    unexcused,
    unknownSender,
    // Of the copies 1Flow took, the share whose relay process was seen (the check above relies on it).
    sendersSeenPct: Math.round(
      (100 * [...sentBy.values()].flat().filter((p) => p !== undefined).length) / delivered.length
    ),
    thrice: thrice.length,
    outOfOrder: outOfOrder.map(([u]) => u),
    maxPerSecond: fake.maxRequestsInWindow(1000),
    // The buckets the frozen relay owned, and whether another relay took one over while it slept.
    frozenOwned: frozenLanes.length,
    takenOver: takeover !== undefined,
    takenOverAfterMs: takeover && Math.round(takeover.at - frozenAt),
    // When the frozen relay's buckets' epochs moved (ms from the start), and when it was frozen and resumed.
    epochsAt: epochs.filter((e) => frozenLanes.includes(e.lane)).map((e) => Math.round(e.at - started)),
    frozen: [frozenAt - started, thawedAt - started],
    drainedMs
  }
  console.log(`pg chaos: ${JSON.stringify(summary)}`)
  // PG_CHAOS_DEBUG=<dir>: each relay's log and every repeated event's sends there, to read what happened.
  if (process.env.PG_CHAOS_DEBUG) {
    const dir = process.env.PG_CHAOS_DEBUG
    relays.forEach((r, i) => writeFileSync(join(dir, `relay-${i}.log`), r.output()))
    const repeated = [...sends].filter(([, s]) => s.length > 1).map(([id, s]) => [id, s.map((t) => t - started)])
    const struckAt = faults.map((f) => ({ ...f, at: f.at - started, until: f.until - started }))
    writeFileSync(join(dir, 'repeats.json'), JSON.stringify({ faults: struckAt, repeated }))
    writeFileSync(join(dir, 'samples.json'), JSON.stringify(debugSamples, null, 1))
  }
  if (!summary.takenOver) {
    // On a CI machine, where PG_CHAOS_DEBUG is not set: the sessions sampled during the freeze, and what the relays
    // said (their logs name no key).
    console.log(`pg chaos, no takeover (frozen ${frozenPid}): ${JSON.stringify(debugSamples)}`)
    relays.forEach((r, i) => console.log(`pg chaos, relay ${i} (${r.child.pid}):\n${r.output().slice(-20_000)}`))
  }
  // The frozen owner's claim ends after idle_session_timeout (5 s), and another relay takes a bucket over within
  // the 15 s freeze: nothing it waits for is the frozen relay's (docs/relay-queue.md, "Recovery is the owner's").
  expect(summary.frozenOwned, 'the relay frozen owned buckets of the project').toBeGreaterThan(0)
  expect(summary.takenOver).toBe(true)
  expect(summary.outOfOrder).toEqual([])
  expect(repeatsPerFault.get('unexplained') ?? 0).toBe(0)
  expect(summary.unexcused).toBeLessThanOrEqual(acked.size / 100)
  for (const [fault, n] of repeatsPerFault) expect(n, JSON.stringify(fault)).toBeLessThanOrEqual(CONCURRENCY * 500)
  expect(summary.maxPerSecond).toBeLessThanOrEqual(LIMIT)

  await watch.close()
  for (const r of relays) r.child.kill('SIGTERM')
  await Promise.all(relays.map((r) => r.exited))
  for (const r of relays) expect(r.output()).not.toMatch(/unhandled|UnhandledPromiseRejection/i)
}, 420_000)
