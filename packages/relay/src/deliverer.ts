/**
 * Delivery from the queue, per lane: each 1Flow project is a lane (Segment events mapped by core, sent to
 * 1Flow's API), and so is each Segment source that receives 1Flow survey responses. Lanes are leased
 * separately, so neither direction waits for the other. For every lane: respect its rate limit, and act on
 * each answer as core classifies it — deliver, retry with full jitter, pause for Retry-After, split on
 * 413, dead-letter on 400/4xx, pause and probe on 401 — without ever losing an event.
 */
import { classifyResponse, fullJitterDelay, type Decision } from '@oneflow-seg/core'
import type { Logger } from 'pino'
import type { RelayConfig, SourceConfig } from './config'
import type { Metrics } from './metrics'
import type { Job, Queue } from './queue/queue'
import { RateLimiter, type Clock, type SendLimiter } from './rate-limiter'
import { OneFlowSink, SegmentSink, type JobFate, type Settle, type Sink, type Unit } from './sinks'
import type { StatusTracker } from './status'

export interface DelivererDeps {
  readonly queue: Queue
  readonly config: RelayConfig
  readonly logger: Logger
  readonly metrics: Metrics
  readonly clock: Clock
  readonly random?: () => number
  readonly fetch?: typeof fetch
  readonly status?: StatusTracker
}

const AUTH_PROBE_MIN_MS = 5_000
const AUTH_PROBE_MAX_MS = 300_000
const FAILURES_BEFORE_PAUSE = 3
/** Segment lanes carry survey responses (a few per minute): a modest pace and two requests in flight. */
const SEGMENT_MAX_REQUESTS_PER_SECOND = 50
const SEGMENT_CONCURRENCY = 2

interface Lane {
  /** The queue's project id: a 1Flow project id, or a Segment lane id (`segment-…`). */
  readonly id: string
  /** For logs, metrics and alerts: the source name, prefixed `segment:` for the Segment direction. */
  readonly label: string
  readonly source: SourceConfig
  readonly sink: Sink
  readonly limiter: SendLimiter
  readonly concurrency: number
  inFlight: number
  /** Retry-After: nothing is sent on this lane before this time. */
  pausedUntil: number
  /** 401/403: sending paused until the next probe. */
  authPausedUntil: number
  authBackoffMs: number
  /** Failed requests in a row: from the third on, the whole lane backs off (full jitter). */
  failures: number
  alert: string | undefined
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
        this.addLane(source.projectId, source.name, source, new OneFlowSink(source, sourcesByName, oneflow, deps.metrics), oneflow.maxRequestsPerSecond, oneflow.concurrency)
      }
      if (source.segment && !this.lanes.has(source.segment.laneId)) {
        this.addLane(source.segment.laneId, `segment:${source.name}`, source, new SegmentSink(source.segment, deps.clock), SEGMENT_MAX_REQUESTS_PER_SECOND, SEGMENT_CONCURRENCY)
      }
    }
  }

  private addLane(id: string, label: string, source: SourceConfig, sink: Sink, maxPerSecond: number, concurrency: number): void {
    const { queue, clock, config } = this.deps
    this.lanes.set(id, {
      id,
      label,
      source,
      sink,
      limiter: queue.sharedLimiter?.(id, maxPerSecond, { inFlightMs: config.oneflow.requestTimeoutMs + 1000, clock }) ?? new RateLimiter(maxPerSecond, clock),
      concurrency,
      inFlight: 0,
      pausedUntil: 0,
      authPausedUntil: 0,
      authBackoffMs: AUTH_PROBE_MIN_MS,
      failures: 0,
      alert: undefined
    })
  }

  /** The sum of every 1Flow project's current request limit (requests/s), for the status page. */
  requestLimit(): number {
    return Math.round([...this.lanes.values()].filter((l) => l.sink.isOneFlow).reduce((n, l) => n + l.limiter.current, 0))
  }

  /** Current alerts (a lane whose key 1Flow or Segment refuses), for /health. */
  alerts(): Array<{ source: string; projectId: string; alert: string }> {
    return [...this.lanes.values()].filter((l) => l.alert).map((l) => ({ source: l.label, projectId: l.id, alert: l.alert as string }))
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

  /** Stops taking work and waits for deliveries in flight (each bounded by the request timeout). */
  async stop(): Promise<void> {
    this.running = false
    this.wake?.()
    await this.loop
    await Promise.allSettled([...this.active])
  }

  private async run(): Promise<void> {
    const { clock, queue, logger } = this.deps
    while (this.running) {
      try {
        for (const lane of this.lanes.values()) {
          while (this.running && lane.inFlight < lane.concurrency && clock.now() >= Math.max(lane.pausedUntil, lane.authPausedUntil)) {
            // A lane paused for auth sends one probe at a time.
            const jobs = await queue.lease(lane.id, lane.alert ? 1 : lane.sink.leaseLimit(), this.leaseMs, clock.now())
            if (jobs.length === 0) break
            this.track(this.deliver(lane, jobs))
            if (lane.alert) break
          }
        }
      } catch (error) {
        logger.error({ err: error }, 'delivery loop error; retrying shortly')
      }
      await this.idle(50)
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

  /** Delivers one leased set of jobs, then settles every job exactly once. */
  private async deliver(lane: Lane, jobs: readonly Job[]): Promise<void> {
    const { clock } = this.deps
    lane.inFlight++
    const fates = new Map<number, JobFate>()
    const settle: Settle = (jobId, fate) => {
      const prev = fates.get(jobId)
      // `done` with `skipped` replaces a plain `done`; otherwise a worse fate wins.
      if (!prev || FATE_ORDER[fate.kind] > FATE_ORDER[prev.kind] || (fate.kind === 'done' && prev.kind === 'done')) fates.set(jobId, fate)
    }
    try {
      const units = lane.sink.prepare(jobs, settle)
      await this.sendAll(lane, units, settle)
      await this.apply(lane, jobs, fates, clock.now())
    } catch (error) {
      // Something unexpected (the queue itself?): give the leases back untouched so nothing is lost.
      this.deps.logger.error({ err: error, project: lane.label }, 'delivery failed unexpectedly; events released for another try')
      await this.deps.queue.release(
        jobs.map((j) => j.id),
        clock.now() + 1000
      )
    } finally {
      lane.inFlight--
    }
  }

  /** Sends units in order; after the first failure the rest are released untried (their users' order holds). */
  private async sendAll(lane: Lane, units: readonly Unit[], settle: Settle): Promise<void> {
    let failed = false
    for (const group of lane.sink.group(units, settle)) {
      if (failed || !this.running) {
        for (const u of group) settle(u.jobId, { kind: 'release' })
        continue
      }
      failed = !(await this.sendGroup(lane, group, settle))
    }
  }

  /** Sends one request (splitting on 413); returns false when the rest of the lease must wait. */
  private async sendGroup(lane: Lane, group: readonly Unit[], settle: Settle): Promise<boolean> {
    const { clock, metrics, logger } = this.deps
    const req = lane.sink.request(group)
    const { service } = lane.sink.party
    const answered = await lane.limiter.acquire()
    let status: number | undefined
    let retryAfter: string | null = null
    let body = ''
    try {
      const res = await this.fetch(req.url, { method: 'POST', headers: req.headers, body: req.body, signal: AbortSignal.timeout(this.deps.config.oneflow.requestTimeoutMs) })
      status = res.status
      retryAfter = res.headers.get('retry-after')
      body = (await res.text()).slice(0, 2000)
    } catch (error) {
      logger.warn({ project: lane.label, endpoint: req.path, err: (error as Error).message }, `${service} did not answer`)
    } finally {
      answered()
    }
    metrics.deliveryRequests.inc({ endpoint: req.path, status_code: String(status ?? 0) })
    if (lane.sink.isOneFlow) this.deps.status?.request()
    const now = clock.now()
    const decision: Decision = classifyResponse({ status, retryAfter }, now, lane.sink.party)
    if (decision.action !== 'deliver') this.deps.status?.error(lane.label, decision.reason)
    if (decision.action !== 'retry') lane.failures = 0
    switch (decision.action) {
      case 'deliver':
        if (lane.alert) {
          logger.info({ project: lane.label }, `${service} accepts ${lane.sink.party.credential} again; sending resumes`)
          lane.alert = undefined
          lane.authBackoffMs = AUTH_PROBE_MIN_MS
          metrics.paused.set({ project: lane.label, reason: 'auth' }, 0)
        }
        return true
      case 'split': {
        if (group.length > 1) {
          const half = Math.ceil(group.length / 2)
          return (await this.sendGroup(lane, group.slice(0, half), settle)) && (await this.sendGroup(lane, group.slice(half), settle))
        }
        settle((group[0] as Unit).jobId, { kind: 'dead', reason: `${service} refused the event as too large (413)`, status: 413, response: body })
        return true
      }
      case 'dead-letter':
        for (const u of group) settle(u.jobId, { kind: 'dead', reason: decision.reason, ...(status !== undefined && { status }), response: body })
        return true
      case 'pause-auth': {
        if (!lane.alert) logger.error({ project: lane.label, status }, `ALERT: ${decision.reason}; sending to ${service} for ${lane.label} is paused and will be re-tried; nothing is dropped`)
        lane.alert = decision.reason
        lane.authPausedUntil = now + lane.authBackoffMs
        lane.authBackoffMs = Math.min(AUTH_PROBE_MAX_MS, lane.authBackoffMs * 2)
        metrics.paused.set({ project: lane.label, reason: 'auth' }, 1)
        for (const u of group) settle(u.jobId, { kind: 'release' })
        return false
      }
      case 'retry': {
        const backoff = fullJitterDelay(lane.failures++, this.random, decision.backoffBaseMs, 60_000)
        const retryAt = now + Math.max(decision.afterMs ?? 0, backoff)
        // A failed request holds back only its own users; Retry-After, or failures in a row (1Flow down),
        // hold back the whole lane so that the service is not hammered.
        if (decision.afterMs !== undefined || lane.failures >= FAILURES_BEFORE_PAUSE) lane.pausedUntil = Math.max(lane.pausedUntil, retryAt)
        if (decision.afterMs !== undefined) {
          metrics.paused.set({ project: lane.label, reason: 'retry_after' }, 1)
          setTimeout(() => metrics.paused.set({ project: lane.label, reason: 'retry_after' }, 0), decision.afterMs).unref()
        }
        if (decision.throttled) {
          lane.limiter.throttled()
          metrics.sendRateLimit.set({ project: lane.label }, lane.limiter.current)
        }
        for (const u of group) settle(u.jobId, { kind: 'retry', at: retryAt, error: decision.reason })
        return false
      }
    }
  }

  /** Writes every job's fate to the queue, a few statements per lease. Past the give-up window a retry becomes a dead letter. */
  private async apply(lane: Lane, jobs: readonly Job[], fates: Map<number, JobFate>, now: number): Promise<void> {
    const { queue, metrics, config, logger } = this.deps
    const label = lane.label
    const giveUpMs = config.limits.giveUpAfterHours * 3_600_000
    const done: number[] = []
    const released: number[] = []
    const retries = new Map<string, { at: number; error: string; ids: number[] }>()
    let delivered = 0
    let skipped = 0
    for (const job of jobs) {
      const fate = fates.get(job.id) as JobFate
      if (fate.kind === 'done') {
        done.push(job.id)
        if (fate.skipped) skipped++
        else delivered++
      } else if (fate.kind === 'release') {
        released.push(job.id)
      } else if (fate.kind === 'dead' || (job.firstAttemptAt !== null && now - job.firstAttemptAt >= giveUpMs)) {
        const info = fate.kind === 'dead' ? fate : { reason: `gave up after ${config.limits.giveUpAfterHours} h of retries; last error: ${fate.error}` }
        await queue.deadLetter([job.id], info, now)
        metrics.deliveryEvents.inc({ project: label, result: 'dead' })
        this.deps.status?.outcome('dead', 1)
        metrics.deadLetters.inc({ project: label, reason: fate.kind === 'dead' ? (fate.status ? String(fate.status) : 'invalid') : 'gave_up' })
        logger.warn({ project: label, messageId: job.messageId, status: fate.kind === 'dead' ? fate.status : undefined }, `event dead-lettered: ${info.reason}`)
      } else {
        const key = `${fate.at}\u0000${fate.error}`
        const entry = retries.get(key) ?? { at: fate.at, error: fate.error, ids: [] }
        entry.ids.push(job.id)
        retries.set(key, entry)
      }
    }
    await queue.complete(done)
    for (const { at, error, ids } of retries.values()) {
      await queue.retry(ids, at, error, now)
      metrics.retries.inc({ project: label, reason: error.includes('429') ? 'rate_limited' : 'error' }, ids.length)
      this.deps.status?.outcome('retried', ids.length)
    }
    // Released jobs were never tried: ready again as soon as the lane may send.
    await queue.release(released, Math.max(now, lane.pausedUntil, lane.authPausedUntil))
    if (delivered) metrics.deliveryEvents.inc({ project: label, result: 'delivered' }, delivered)
    if (skipped) metrics.deliveryEvents.inc({ project: label, result: 'skipped' }, skipped)
    this.deps.status?.outcome('delivered', delivered)
    this.deps.status?.outcome('skipped', skipped)
  }
}
