/**
 * Delivery from the queue, per lane: each 1Flow project is a lane (Segment events mapped by core, sent to
 * 1Flow's API), and so is each Segment source that receives 1Flow survey responses. Lanes are leased
 * separately, so neither direction waits for the other. For every lane: respect its rate limit, send what the
 * sink planned, and act on each answer as `judge` decides — deliver, retry with full jitter, pause for
 * Retry-After, split on 413, dead-letter on 400/4xx, pause and probe on 401 or a redirect — without ever
 * losing an event. A failing queue never stops the process: its errors are reported to QueueHealth, and
 * events whose fate could not be written come back when their lease expires.
 */
import { classifyResponse, OneFlowError } from '@oneflow-seg/core'
import type { Logger } from 'pino'
import type { RelayConfig, SourceConfig } from './config'
import { BurstGate } from './burst-gate'
import { judge } from './delivery-policy'
import { INITIAL_LANE_STATE, laneReducer, mayLease, sendsFrom, type LaneAction, type LaneState } from './lane-state'
import type { Metrics } from './metrics'
import type { QueueHealth } from './queue-health'
import { InboxRowError, type Job, type Queue } from './queue/queue'
import { RateLimiter, type Clock, type SendLimiter } from './rate-limiter'
import { OneFlowSink, SegmentSink, type HttpRequest, type JobFate, type Sink, type Unit } from './sinks'
import type { StatusTracker } from './status'
import { VERSION } from './version'

export interface DelivererDeps {
  readonly queue: Queue
  readonly config: RelayConfig
  readonly logger: Logger
  readonly metrics: Metrics
  readonly clock: Clock
  readonly random?: () => number
  readonly fetch?: typeof fetch
  readonly status?: StatusTracker
  readonly health: QueueHealth
}

/** Outcomes not recorded are written again only while their leases have at least this long left. */
const RECORD_MARGIN_MS = 2_000
/** How long an outcome that could not be written keeps its events' lease (then they are sent again). */
const UNRECORDED_KEEP_MS = 120_000
/** What the relay's requests to 1Flow and Segment say they come from. */
export const USER_AGENT = `oneflow-relay/${VERSION} (+https://www.npmjs.com/package/@oneflow-seg/relay)`
/** A request goes out only while its lease has a request timeout and this much left; else the lease is renewed. */
const LEASE_MARGIN_MS = 2_000
/** After a queue error, the delivery loop waits this long before leasing again. */
const QUEUE_ERROR_PAUSE_MS = 1_000
/**
 * A lane stopped by a row it cannot read (InboxRowError) leases again after this long (its retries, ready in the
 * events table, are leased before the inbox is read); its sends and the other lanes go on meanwhile.
 */
const UNREADABLE_LANE_RETRY_MS = 1_000
/** Segment lanes carry survey responses (a few per minute): a modest pace and two requests in flight. */
const SEGMENT_MAX_REQUESTS_PER_SECOND = 50
const SEGMENT_CONCURRENCY = 2

interface Lane {
  /** The queue's lane id: a 1Flow project id, or a Segment lane id (`segment-…`). */
  readonly laneId: string
  /** For logs, metrics and alerts: the source name, prefixed `segment:` for the Segment direction. */
  readonly label: string
  readonly source: SourceConfig
  readonly sink: Sink
  readonly limiter: SendLimiter
  readonly concurrency: number
  /** Changed only by Deliverer#dispatch (see lane-state.ts). */
  state: LaneState
}

type Settle = (jobId: number, fate: JobFate) => void
/** Before a request goes out: true when its lease still holds all its units (renewed when due); throws when renewing failed. */
type KeepLease = (units: ReadonlyArray<Unit>) => Promise<boolean>

/** A request was not sent because its lease is lost, or could not be renewed (`cause`: the queue's error). */
class LeaseLostError extends OneFlowError {
  override readonly name = 'LeaseLostError'
  readonly code = 'LEASE_LOST'
  readonly remedy = 'retry'
  constructor(override readonly cause: unknown) {
    super(cause === undefined ? 'the lease was taken back' : 'the lease could not be renewed')
  }
}

/** The lane's send slot could not be taken (the shared limiter's database failed): nothing was sent. */
class SendSlotError extends OneFlowError {
  override readonly name = 'SendSlotError'
  readonly code = 'NO_SEND_SLOT'
  readonly remedy = 'retry'
  constructor(override readonly cause: unknown) {
    super(`no send slot: ${cause instanceof Error ? cause.message : String(cause)}`)
  }
}

const FATE_ORDER = { done: 0, release: 1, retry: 2, dead: 3 } as const

export class Deliverer {
  private readonly lanes = new Map<string, Lane>()
  private running = false
  private loop: Promise<void> | undefined
  private readonly active = new Set<Promise<void>>()
  private wake: (() => void) | undefined
  private readonly random: () => number
  private readonly fetch: typeof fetch
  /** How long a lease lasts: longer than any delivery can take (a few request timeouts), short enough that a crashed relay's events come back soon. */
  readonly leaseMs: number

  constructor(private readonly deps: DelivererDeps) {
    this.random = deps.random ?? Math.random
    this.fetch = deps.fetch ?? globalThis.fetch
    this.leaseMs = 3 * deps.config.oneflow.requestTimeoutMs + 5_000
    const { oneflow } = deps.config
    const sourcesByName = new Map(deps.config.sources.map((s) => [s.name, s]))
    for (const source of deps.config.sources) {
      if (!this.lanes.has(source.projectId)) {
        this.addLane(
          source.projectId,
          source.name,
          source,
          new OneFlowSink(source, sourcesByName, oneflow, deps.metrics),
          oneflow.maxRequestsPerSecond,
          oneflow.concurrency
        )
      }
      if (source.segment && !this.lanes.has(source.segment.laneId)) {
        this.addLane(
          source.segment.laneId,
          `segment:${source.name}`,
          source,
          new SegmentSink(source.segment, deps.clock),
          SEGMENT_MAX_REQUESTS_PER_SECOND,
          SEGMENT_CONCURRENCY
        )
      }
    }
  }

  private addLane(
    laneId: string,
    label: string,
    source: SourceConfig,
    sink: Sink,
    maxPerSecond: number,
    concurrency: number
  ): void {
    const { queue, clock, config } = this.deps
    this.lanes.set(laneId, {
      laneId,
      label,
      source,
      sink,
      limiter:
        queue.sharedLimiter?.(laneId, maxPerSecond, { inFlightMs: config.oneflow.requestTimeoutMs + 1000, clock }) ??
        new RateLimiter(maxPerSecond, clock),
      concurrency,
      state: INITIAL_LANE_STATE
    })
  }

  /** The sum of every 1Flow project's current request limit (requests/s), for the status page. */
  requestLimit(): number {
    return Math.round(
      [...this.lanes.values()].filter((l) => l.sink.isOneFlow).reduce((n, l) => n + l.limiter.current, 0)
    )
  }

  /** Current alerts (a lane whose key is refused, or whose service redirects), for /health. */
  alerts(): Array<{ source: string; projectId: string; alert: string }> {
    return [...this.lanes.values()].flatMap((l) =>
      l.state.alert ? [{ source: l.label, projectId: l.laneId, alert: l.state.alert.reason }] : []
    )
  }

  /** Each lane's figures for the status page: both directions, side by side. */
  laneStatus(): Array<{
    laneId: string
    lane: string
    service: string
    limit: number
    inFlight: number
    paused: boolean
    alert: string | null
  }> {
    const now = this.deps.clock.now()
    return [...this.lanes.values()].map((l) => ({
      laneId: l.laneId,
      lane: l.label,
      service: l.sink.party.service,
      limit: Math.round(l.limiter.current),
      inFlight: l.state.inFlight,
      paused: now < sendsFrom(l.state),
      alert: l.state.alert?.reason ?? null
    }))
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.loop = this.run()
  }

  /** New events were queued: look for work now rather than at the next tick. */
  poke(): void {
    this.wake?.()
  }

  /** Clients first during a burst of ingest (see BurstGate). */
  private readonly burst = new BurstGate()

  /** An ingest request was accepted (and is on disk). */
  noteIngest(): void {
    this.burst.ingested()
  }

  /** Stops taking work and waits for deliveries in flight (each bounded by the request timeout). */
  async stop(): Promise<void> {
    this.running = false
    this.wake?.()
    await this.loop
    await Promise.allSettled([...this.active])
  }

  private async run(): Promise<void> {
    const { clock } = this.deps
    while (this.running) {
      try {
        await this.recordUnrecorded()
        for (const lane of this.lanes.values()) {
          try {
            await this.leaseWhileAllowed(lane)
          } catch (error) {
            if (!(error instanceof InboxRowError)) throw error
            // One lane's damaged row stops that lane's leasing for a moment, not the others (they would wait with it
            // on every round), nor its sends (retries of events before the row).
            this.dispatch(lane, { type: 'unreadable', until: clock.now() + UNREADABLE_LANE_RETRY_MS })
            if (!this.unreadable.has(error.message)) {
              this.unreadable.add(error.message)
              this.deps.logger.error({ lane: lane.label, err: error }, error.message)
            }
          }
        }
      } catch (error) {
        // Another relay's lock or a slow statement is not a failing queue; a failed write is (QueueHealth).
        await this.deps.health.failedUnlessWritable(error, 'leasing events for delivery')
        await this.idle(QUEUE_ERROR_PAUSE_MS)
        continue
      }
      this.deps.health.worked('leasing events for delivery')
      await this.idle(50)
    }
  }

  /** The unreadable rows logged (their errors' messages, each naming its row): each is logged once. */
  private readonly unreadable = new Set<string>()

  /** Leases and starts deliveries for `lane` while its state, its concurrency and the burst rule allow. */
  private async leaseWhileAllowed(lane: Lane): Promise<void> {
    const { clock, queue } = this.deps
    while (this.running && mayLease(lane.state, lane.concurrency, clock.now()) && this.burst.mayLease(lane.laneId)) {
      // A lane paused by an alert sends one probe at a time.
      const leasedAt = clock.now()
      const jobs = await queue.lease(lane.laneId, lane.state.alert ? 1 : lane.sink.leaseLimit(), this.leaseMs, leasedAt)
      if (jobs.length === 0) break
      this.track(this.deliver(lane, jobs, leasedAt + this.leaseMs))
      if (lane.state.alert) break
      // A lease and the start of its delivery (mapping its events) run on this thread without a pause; the next
      // lease waits for pending I/O first, so ingest requests are answered between leases rather than after
      // all of a lane's (its concurrency, each up to 500 events).
      await new Promise<void>((resolve) => setImmediate(resolve))
    }
  }

  private track(p: Promise<void>): void {
    this.active.add(p)
    void p.finally(() => {
      this.active.delete(p)
      this.poke()
    })
  }

  private idle(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      function done() {
        clearTimeout(timer)
        resolve()
      }
      this.wake = done
    })
  }

  /**
   * Outcomes the queue could not record (it failed meanwhile), kept to be written again once it works, while
   * their leases still hold (nobody else may touch those events until then). Without this, their events would
   * wait for the leases to expire (3 × requestTimeoutMs + 5 s) and the next recovery before going out again.
   */
  private readonly unrecorded: Array<{
    readonly lane: Lane
    readonly jobs: readonly Job[]
    readonly fates: Map<number, JobFate>
    readonly now: number
    leaseUntil: number
  }> = []

  /** Writes the outcomes kept by deliver() when the queue failed; drops those whose leases are about to expire. */
  private async recordUnrecorded(): Promise<void> {
    const { clock } = this.deps
    while (this.unrecorded.length > 0) {
      const entry = this.unrecorded[0] as (typeof this.unrecorded)[number]
      // 1Flow has answered for these events: keep their lease while the outcome waits to be written, rather than
      // let it expire and have them sent again. Only when it cannot be kept (taken back, or the queue fails) are
      // they given up, and recovery sends them again.
      if (clock.now() >= entry.leaseUntil - RECORD_MARGIN_MS) {
        const until = clock.now() + this.leaseMs
        const kept =
          clock.now() - entry.now < UNRECORDED_KEEP_MS
            ? await this.deps.queue.renew(entry.jobs, until).catch(() => [] as number[])
            : []
        if (kept.length < entry.jobs.length) {
          this.unrecorded.shift()
          continue
        }
        entry.leaseUntil = until
      }
      await this.apply(entry.lane, entry.jobs, entry.fates, entry.now)
      this.unrecorded.shift()
    }
  }

  /** Delivers one leased set of jobs, then settles every job exactly once. Never rejects. */
  private async deliver(lane: Lane, jobs: readonly Job[], leaseUntil: number): Promise<void> {
    const { clock, logger, queue } = this.deps
    this.dispatch(lane, { type: 'leased' })
    const fates = new Map<number, JobFate>()
    /** Ids this lease no longer holds (taken back after it expired): never sent by this relay. */
    const lost = new Set<number>()
    /** Ids whose request was answered (settled by what the service said). */
    const answered = new Set<number>()
    // The lease must outlast every request made under it: just before a request goes out (its send slot taken),
    // a lease with less than a request timeout and a margin left is renewed. A renewal that fails stops this
    // lease's sending (the rest is released); jobs taken back are not sent.
    const keepLease: KeepLease = async (units) => {
      if (leaseUntil - clock.now() >= this.deps.config.oneflow.requestTimeoutMs + LEASE_MARGIN_MS)
        return units.every((u) => !lost.has(u.jobId))
      // Every job of the lease, answered or not: outcomes are written when the lease ends, so it must hold them all.
      const open = jobs.filter((j) => !lost.has(j.id))
      const until = clock.now() + this.leaseMs
      const still = new Set(await queue.renew(open, until))
      leaseUntil = until
      for (const j of open) if (!still.has(j.id)) lost.add(j.id)
      if (lost.size > 0)
        logger.warn(
          { lane: lane.label, events: lost.size },
          'a lease expired before its events were sent (this relay was stalled); they were taken back and are not sent by it'
        )
      return units.every((u) => !lost.has(u.jobId))
    }
    const settle: Settle = (jobId, fate) => {
      const prev = fates.get(jobId)
      // `done` with `skipped` replaces a plain `done`; otherwise a worse fate wins.
      if (!prev || FATE_ORDER[fate.kind] > FATE_ORDER[prev.kind] || (fate.kind === 'done' && prev.kind === 'done'))
        fates.set(jobId, fate)
    }
    const settleAnswered: Settle = (jobId, fate) => {
      answered.add(jobId)
      settle(jobId, fate)
    }
    try {
      const plan = lane.sink.plan(jobs)
      for (const [jobId, fate] of plan.settled) settle(jobId, fate)
      let proceed = true
      for (const { units, request } of plan.requests) {
        if (!proceed || !this.running) {
          for (const u of units) settle(u.jobId, { kind: 'release' })
          continue
        }
        try {
          proceed = await this.send(lane, units, request, settleAnswered, keepLease)
        } catch (error) {
          if (error instanceof LeaseLostError) {
            // Renewing failed (the queue is failing) or the lease was taken back: nothing more is sent under it.
            if (error.cause !== undefined) await this.deps.health.failedUnlessWritable(error.cause, 'renewing a lease')
            for (const u of units) if (!answered.has(u.jobId)) settle(u.jobId, { kind: 'release' })
            proceed = false
            continue
          }
          if (!(error instanceof SendSlotError)) throw error
          // The shared rate limit lives in the queue's database: it failed, so nothing was sent. The lane waits a
          // moment before it tries again (a limiter failing at once must not spin the relay's thread).
          this.dispatch(lane, { type: 'paused', until: clock.now() + QUEUE_ERROR_PAUSE_MS })
          await this.deps.health.failedUnlessWritable(error.cause, 'taking a send slot')
          for (const u of units) if (!answered.has(u.jobId)) settle(u.jobId, { kind: 'release' })
          proceed = false
        }
      }
      // Every job starts as done (plan.settled): one with a unit no answer covered was not sent, and goes back.
      for (const { units } of plan.requests)
        for (const u of units) if (!answered.has(u.jobId)) settle(u.jobId, { kind: 'release' })
    } catch (error) {
      logger.error(
        { err: error, lane: lane.label },
        'delivery failed unexpectedly; the events are released for another try'
      )
      for (const job of jobs) settle(job.id, { kind: 'release' })
    }
    const now = clock.now()
    try {
      await this.apply(lane, jobs, fates, now)
      this.deps.health.worked('recording delivery outcomes')
    } catch (error) {
      // The queue could not record the outcome: written again once it works (while the leases hold), else the
      // leases expire and the events are delivered again.
      await this.deps.health.failedUnlessWritable(error, 'recording delivery outcomes')
      this.unrecorded.push({ lane, jobs, fates, now, leaseUntil })
    } finally {
      this.dispatch(lane, { type: 'settled' })
    }
  }

  /** Sends one request (halves of it again on 413) and settles its units; false when the rest of the lease must wait. */
  private async send(
    lane: Lane,
    units: ReadonlyArray<Unit>,
    request: HttpRequest,
    settle: Settle,
    keepLease: KeepLease
  ): Promise<boolean> {
    const { clock, metrics, logger } = this.deps
    const { service } = lane.sink.party
    const answered = await lane.limiter.acquire().catch((error: unknown) => Promise.reject(new SendSlotError(error)))
    this.deps.health.worked('taking a send slot')
    let ours: boolean
    try {
      ours = await keepLease(units)
    } catch (error) {
      answered()
      throw new LeaseLostError(error)
    }
    // A failure of either is logged once, and again only after it worked in between.
    this.deps.health.worked('renewing a lease')
    if (!ours) {
      answered()
      throw new LeaseLostError(undefined)
    }
    let status: number | undefined
    let retryAfter: string | null = null
    let location: string | null = null
    let body = ''
    try {
      // Never follow a redirect: the key would go wherever the answer points.
      const res = await this.fetch(request.url, {
        method: 'POST',
        // Says what sends (1Flow's and Segment's logs show it), never Node's default.
        headers: { 'user-agent': USER_AGENT, ...request.headers },
        body: request.body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.deps.config.oneflow.requestTimeoutMs)
      })
      status = res.status
      retryAfter = res.headers.get('retry-after')
      location = res.headers.get('location')
      body = (await res.text()).slice(0, 2000)
    } catch (error) {
      logger.warn(
        { lane: lane.label, endpoint: request.path, err: (error as Error).message },
        `${service} did not answer`
      )
    } finally {
      answered()
    }
    metrics.deliveryRequests.inc({ endpoint: request.path, status_code: String(status ?? 0) })
    this.deps.status?.request(lane.label, lane.sink.isOneFlow)
    const now = clock.now()
    const decision = classifyResponse({ status, retryAfter, location }, now, lane.sink.party)
    if (decision.action !== 'deliver') this.deps.status?.error(lane.label, decision.reason)
    const verdict = judge(
      decision,
      { status, body, units: units.length, service },
      lane.state.failures,
      now,
      this.random
    )
    this.dispatch(lane, { type: 'judged', verdict, now })
    if (verdict.split) {
      const half = Math.ceil(units.length / 2)
      const [first, second] = [units.slice(0, half), units.slice(half)]
      if (!(await this.send(lane, first, lane.sink.request(first), settle, keepLease))) {
        // The first half must wait (a retry, a pause): the second half was not sent, and goes back as it was.
        for (const u of second) settle(u.jobId, { kind: 'release' })
        return false
      }
      return this.send(lane, second, lane.sink.request(second), settle, keepLease)
    }
    for (const u of units) settle(u.jobId, verdict.fate as JobFate)
    return verdict.proceed
  }

  /**
   * The one way a lane's state changes (laneReducer), followed by what the change means outside it: logs and metrics
   * when an alert starts or ends, the rate limiter cut on 429.
   */
  private dispatch(lane: Lane, action: LaneAction): void {
    const before = lane.state
    const after = laneReducer(before, action)
    lane.state = after
    if (action.type !== 'judged') return
    const { metrics, logger } = this.deps
    const { service } = lane.sink.party
    const { verdict } = action
    if (before.alert && !after.alert) {
      logger.info({ lane: lane.label }, `${service} accepts requests again (${before.alert.cause}); sending resumes`)
      metrics.paused.set({ project: lane.label, reason: before.alert.cause }, 0)
    }
    if (verdict.alert) {
      if (!before.alert)
        logger.error(
          { lane: lane.label, cause: verdict.alert.cause },
          `ALERT: ${verdict.alert.reason}; sending to ${service} for ${lane.label} is paused and will be re-tried; nothing is dropped`
        )
      metrics.paused.set({ project: lane.label, reason: verdict.alert.cause }, 1)
    }
    // The lane's pause is kept for whichever relay owns the lane next (PostgreSQL), should this one die or let the lane
    // go while it waits. Not kept (the queue failing), it costs that relay one request, which the service answers the same.
    if (verdict.pauseUntil !== undefined)
      void this.deps.queue.pauseLane?.(lane.laneId, verdict.pauseUntil).catch(() => undefined)
    if (verdict.retryAfterMs !== undefined) {
      metrics.paused.set({ project: lane.label, reason: 'retry_after' }, 1)
      setTimeout(
        () => metrics.paused.set({ project: lane.label, reason: 'retry_after' }, 0),
        verdict.retryAfterMs
      ).unref()
    }
    if (verdict.throttled) {
      lane.limiter.throttled()
      metrics.sendRateLimit.set({ project: lane.label }, lane.limiter.current)
    }
  }

  /** Writes every job's fate to the queue, a few statements per lease. Past the give-up window a retry becomes a dead letter. */
  private async apply(lane: Lane, jobs: readonly Job[], fates: Map<number, JobFate>, now: number): Promise<void> {
    const { queue, metrics, config, logger } = this.deps
    const label = lane.label
    const giveUpMs = config.limits.giveUpAfterHours * 3_600_000
    // Settles name the jobs with their lease: an outcome for a lease that was taken back changes nothing.
    const done: Job[] = []
    const released: Job[] = []
    const retries = new Map<string, { at: number; error: string; rateLimited: boolean; ids: Job[] }>()
    let delivered = 0
    let skipped = 0
    for (const job of jobs) {
      const fate = fates.get(job.id) as JobFate
      if (fate.kind === 'done') {
        done.push(job)
        if (fate.skipped) skipped++
        else {
          delivered++
          metrics.deliveryLatency.observe({ project: label }, Math.max(0, now - job.receivedAt) / 1000)
        }
      } else if (fate.kind === 'release') {
        released.push(job)
      } else if (fate.kind === 'dead' || (job.firstAttemptAt !== null && now - job.firstAttemptAt >= giveUpMs)) {
        const info =
          fate.kind === 'dead'
            ? fate
            : {
                reason: `gave up after ${config.limits.giveUpAfterHours} h of retries; last error: ${fate.error}`,
                sent: true
              }
        await queue.deadLetter([job], info, now)
        metrics.deliveryEvents.inc({ project: label, result: 'dead' })
        this.deps.status?.outcome('dead', 1, label, lane.sink.isOneFlow)
        metrics.deadLetters.inc({
          project: label,
          reason: fate.kind === 'dead' ? (fate.status ? String(fate.status) : 'invalid') : 'gave_up'
        })
        logger.warn(
          { project: label, messageId: job.messageId, status: fate.kind === 'dead' ? fate.status : undefined },
          `event dead-lettered: ${info.reason}`
        )
      } else {
        const key = `${fate.at}\u0000${fate.error}`
        const entry = retries.get(key) ?? {
          at: fate.at,
          error: fate.error,
          rateLimited: fate.rateLimited === true,
          ids: []
        }
        entry.ids.push(job)
        retries.set(key, entry)
      }
    }
    await queue.complete(done)
    for (const { at, error, rateLimited, ids } of retries.values()) {
      await queue.retry(ids, at, error, now)
      metrics.retries.inc({ project: label, reason: rateLimited ? 'rate_limited' : 'error' }, ids.length)
      this.deps.status?.outcome('retried', ids.length, label, lane.sink.isOneFlow)
    }
    // Released jobs were never tried: ready again as soon as the lane may send.
    await queue.release(released, Math.max(now, sendsFrom(lane.state)))
    if (delivered) metrics.deliveryEvents.inc({ project: label, result: 'delivered' }, delivered)
    if (skipped) metrics.deliveryEvents.inc({ project: label, result: 'skipped' }, skipped)
    this.deps.status?.outcome('delivered', delivered, label, lane.sink.isOneFlow)
    this.deps.status?.outcome('skipped', skipped, label, lane.sink.isOneFlow)
  }
}
