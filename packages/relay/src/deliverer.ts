/**
 * Delivery from the queue to 1Flow, per project: map with core (skips counted, never sent), pack into
 * /batch requests of at most 480 KB (or one request per event), respect the rate limit, and act on each
 * answer as core classifies it — deliver, retry with full jitter, pause for Retry-After, split on 413,
 * dead-letter on 400/4xx, pause and probe on 401 — without ever losing an event.
 */
import {
  buildRequest,
  classifyResponse,
  fullJitterDelay,
  mapWithPresets,
  packBatches,
  ONEFLOW_LIMITS,
  PayloadTooLargeError,
  toBatchItem,
  utf8ByteLength,
  type Command,
  type Decision,
  type OneFlowRequest,
  type SegmentEvent
} from '@oneflow-seg/core'
import { mapWithSubscriptions } from '@oneflow-seg/core/mapping'
import type { Logger } from 'pino'
import type { RelayConfig, SourceConfig } from './config'
import type { Metrics } from './metrics'
import type { Job, Queue } from './queue/queue'
import { RateLimiter, type Clock, type SendLimiter } from './rate-limiter'
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

const BATCH_EVENTS = 500
const AUTH_PROBE_MIN_MS = 5_000
const AUTH_PROBE_MAX_MS = 300_000
const FAILURES_BEFORE_PAUSE = 3

interface ProjectState {
  readonly id: string
  /** Source used for the api key and labels (all sources of a project share its key). */
  readonly source: SourceConfig
  readonly limiter: SendLimiter
  inFlight: number
  /** Retry-After from 1Flow: nothing is sent to this project before this time. */
  pausedUntil: number
  /** 401/403: sending paused until the next probe. */
  authPausedUntil: number
  authBackoffMs: number
  /** Failed requests in a row: from the third on, the whole project backs off (full jitter). */
  failures: number
  alert: string | undefined
}

/** One command to send, with the jobs (queue rows) it came from. */
interface Unit {
  readonly cmd: Command
  readonly jobId: number
}

type JobFate = { kind: 'done'; skipped?: boolean } | { kind: 'retry'; at: number; error: string } | { kind: 'dead'; reason: string; status?: number; response?: string } | { kind: 'release' }

const FATE_ORDER = { done: 0, release: 1, retry: 2, dead: 3 } as const

export class Deliverer {
  private readonly projects = new Map<string, ProjectState>()
  private readonly sourcesByName = new Map<string, SourceConfig>()
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
    for (const source of deps.config.sources) {
      this.sourcesByName.set(source.name, source)
      if (!this.projects.has(source.projectId)) {
        this.projects.set(source.projectId, {
          id: source.projectId,
          source,
          limiter:
            deps.queue.sharedLimiter?.(source.projectId, deps.config.oneflow.maxRequestsPerSecond, { inFlightMs: deps.config.oneflow.requestTimeoutMs + 1000, clock: deps.clock }) ??
            new RateLimiter(deps.config.oneflow.maxRequestsPerSecond, deps.clock),
          inFlight: 0,
          pausedUntil: 0,
          authPausedUntil: 0,
          authBackoffMs: AUTH_PROBE_MIN_MS,
          failures: 0,
          alert: undefined
        })
      }
    }
  }

  /** The sum of every project's current request limit (requests/s), for the status page. */
  requestLimit(): number {
    return Math.round([...this.projects.values()].reduce((n, p) => n + p.limiter.current, 0))
  }

  /** Current alerts (a project whose key 1Flow refuses), for /health. */
  alerts(): Array<{ source: string; projectId: string; alert: string }> {
    return [...this.projects.values()].filter((p) => p.alert).map((p) => ({ source: p.source.name, projectId: p.id, alert: p.alert as string }))
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
        for (const project of this.projects.values()) {
          while (this.running && project.inFlight < this.deps.config.oneflow.concurrency && clock.now() >= Math.max(project.pausedUntil, project.authPausedUntil)) {
            // A paused-for-auth project sends one probe at a time; in single mode a lease holds at most one
            // second of requests at full rate, so that it is sent well within its lease.
            const limit = project.alert ? 1 : this.deps.config.oneflow.mode === 'single' ? Math.min(BATCH_EVENTS, Math.ceil(this.deps.config.oneflow.maxRequestsPerSecond)) : BATCH_EVENTS
            const jobs = await queue.lease(project.id, limit, this.leaseMs, clock.now())
            if (jobs.length === 0) break
            this.track(this.deliver(project, jobs))
            if (project.alert) break
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

  private route(job: Job) {
    const event = JSON.parse(job.body) as SegmentEvent
    const source = this.sourcesByName.get(job.sourceName)
    return source?.subscriptions ? mapWithSubscriptions(event, source.subscriptions) : mapWithPresets(event)
  }

  /** Delivers one leased set of jobs, then settles every job exactly once. */
  private async deliver(project: ProjectState, jobs: readonly Job[]): Promise<void> {
    const { metrics, clock } = this.deps
    project.inFlight++
    const fates = new Map<number, JobFate>()
    const settle = (jobId: number, fate: JobFate) => {
      const prev = fates.get(jobId)
      if (!prev || FATE_ORDER[fate.kind] > FATE_ORDER[prev.kind]) fates.set(jobId, fate)
    }
    try {
      const units: Unit[] = []
      for (const job of jobs) {
        settle(job.id, { kind: 'done' })
        let results
        try {
          results = this.route(job)
        } catch (error) {
          settle(job.id, { kind: 'dead', reason: `could not map the event: ${(error as Error).message}` })
          continue
        }
        for (const { outcome } of results) {
          if (outcome.kind === 'skip') metrics.skipped.inc({ project: project.source.name, reason: outcome.reason })
          else if (outcome.kind === 'invalid') settle(job.id, { kind: 'dead', reason: outcome.error.message })
          else units.push({ cmd: outcome, jobId: job.id })
        }
        if (results.every((r) => r.outcome.kind === 'skip')) fates.set(job.id, { kind: 'done', skipped: true })
      }
      await this.sendAll(project, units, settle)
      await this.apply(project, jobs, fates, clock.now())
    } catch (error) {
      // Something unexpected (the queue itself?): give the leases back untouched so nothing is lost.
      this.deps.logger.error({ err: error, project: project.source.name }, 'delivery failed unexpectedly; events released for another try')
      await this.deps.queue.release(
        jobs.map((j) => j.id),
        clock.now() + 1000
      )
    } finally {
      project.inFlight--
    }
  }

  /** Sends units in order; after the first failure the rest are released untried (their users' order holds). */
  private async sendAll(project: ProjectState, units: readonly Unit[], settle: (jobId: number, fate: JobFate) => void): Promise<void> {
    const target = { apiBaseUrl: this.deps.config.oneflow.apiBaseUrl, projectApiKey: project.source.projectApiKey }
    const groups: Unit[][] = []
    if (this.deps.config.oneflow.mode === 'single') {
      for (const unit of units) {
        try {
          buildRequest(unit.cmd, target)
          groups.push([unit])
        } catch (error) {
          if (!(error instanceof PayloadTooLargeError)) throw error
          settle(unit.jobId, { kind: 'dead', reason: error.message, status: 413 })
        }
      }
    } else {
      const { batches, tooLarge } = packBatches(
        units.map((u) => u.cmd),
        target
      )
      for (const i of tooLarge) {
        const unit = units[i] as Unit
        const bytes = utf8ByteLength(JSON.stringify(toBatchItem(unit.cmd)))
        settle(unit.jobId, { kind: 'dead', reason: new PayloadTooLargeError(bytes, ONEFLOW_LIMITS.maxRequestBytes).message, status: 413 })
      }
      for (const b of batches) groups.push(b.indices.map((i) => units[i] as Unit))
    }
    let failed = false
    for (const group of groups) {
      if (failed || !this.running) {
        for (const u of group) settle(u.jobId, { kind: 'release' })
        continue
      }
      failed = !(await this.sendGroup(project, group, target, settle))
    }
  }

  private request(group: readonly Unit[], target: { apiBaseUrl: string; projectApiKey: string }): OneFlowRequest {
    return this.deps.config.oneflow.mode === 'single' ? buildRequest((group[0] as Unit).cmd, target) : (packBatches(group.map((u) => u.cmd), target).batches[0]?.request as OneFlowRequest)
  }

  /** Sends one request (splitting on 413); returns false when the rest of the lease must wait. */
  private async sendGroup(project: ProjectState, group: readonly Unit[], target: { apiBaseUrl: string; projectApiKey: string }, settle: (jobId: number, fate: JobFate) => void): Promise<boolean> {
    const { clock, metrics, logger } = this.deps
    const req = this.request(group, target)
    const answered = await project.limiter.acquire()
    let status: number | undefined
    let retryAfter: string | null = null
    let body = ''
    try {
      const res = await this.fetch(req.url, { method: 'POST', headers: req.headers, body: req.body, signal: AbortSignal.timeout(this.deps.config.oneflow.requestTimeoutMs) })
      status = res.status
      retryAfter = res.headers.get('retry-after')
      body = (await res.text()).slice(0, 2000)
    } catch (error) {
      logger.warn({ project: project.source.name, endpoint: req.path, err: (error as Error).message }, '1Flow did not answer')
    } finally {
      answered()
    }
    metrics.deliveryRequests.inc({ endpoint: req.path, status_code: String(status ?? 0) })
    this.deps.status?.request()
    const now = clock.now()
    const decision: Decision = classifyResponse({ status, retryAfter }, now)
    if (decision.action !== 'deliver') this.deps.status?.error(project.source.name, decision.reason)
    if (decision.action !== 'retry') project.failures = 0
    switch (decision.action) {
      case 'deliver':
        if (project.alert) {
          logger.info({ project: project.source.name }, '1Flow accepts the project API key again; sending resumes')
          project.alert = undefined
          project.authBackoffMs = AUTH_PROBE_MIN_MS
          metrics.paused.set({ project: project.source.name, reason: 'auth' }, 0)
        }
        return true
      case 'split': {
        if (group.length > 1) {
          const half = Math.ceil(group.length / 2)
          return (await this.sendGroup(project, group.slice(0, half), target, settle)) && (await this.sendGroup(project, group.slice(half), target, settle))
        }
        settle((group[0] as Unit).jobId, { kind: 'dead', reason: '1Flow refused the event as too large (413)', status: 413, response: body })
        return true
      }
      case 'dead-letter':
        for (const u of group) settle(u.jobId, { kind: 'dead', reason: decision.reason, ...(status !== undefined && { status }), response: body })
        return true
      case 'pause-auth': {
        if (!project.alert) logger.error({ project: project.source.name, status }, `ALERT: ${decision.reason}; sending to this project is paused and will be re-tried; nothing is dropped`)
        project.alert = decision.reason
        project.authPausedUntil = now + project.authBackoffMs
        project.authBackoffMs = Math.min(AUTH_PROBE_MAX_MS, project.authBackoffMs * 2)
        metrics.paused.set({ project: project.source.name, reason: 'auth' }, 1)
        for (const u of group) settle(u.jobId, { kind: 'release' })
        return false
      }
      case 'retry': {
        const backoff = fullJitterDelay(project.failures++, this.random, decision.backoffBaseMs, 60_000)
        const retryAt = now + Math.max(decision.afterMs ?? 0, backoff)
        // A failed request holds back only its own users; Retry-After, or failures in a row (1Flow down),
        // hold back the whole project so that 1Flow is not hammered.
        if (decision.afterMs !== undefined || project.failures >= FAILURES_BEFORE_PAUSE) project.pausedUntil = Math.max(project.pausedUntil, retryAt)
        if (decision.afterMs !== undefined) {
          metrics.paused.set({ project: project.source.name, reason: 'retry_after' }, 1)
          setTimeout(() => metrics.paused.set({ project: project.source.name, reason: 'retry_after' }, 0), decision.afterMs).unref()
        }
        if (decision.throttled) {
          project.limiter.throttled()
          metrics.sendRateLimit.set({ project: project.source.name }, project.limiter.current)
        }
        for (const u of group) settle(u.jobId, { kind: 'retry', at: retryAt, error: decision.reason })
        return false
      }
    }
  }

  /** Writes every job's fate to the queue, a few statements per lease. Past the give-up window a retry becomes a dead letter. */
  private async apply(project: ProjectState, jobs: readonly Job[], fates: Map<number, JobFate>, now: number): Promise<void> {
    const { queue, metrics, config, logger } = this.deps
    const label = project.source.name
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
    // Released jobs were never tried: ready again as soon as the project may send.
    await queue.release(released, Math.max(now, project.pausedUntil, project.authPausedUntil))
    if (delivered) metrics.deliveryEvents.inc({ project: label, result: 'delivered' }, delivered)
    if (skipped) metrics.deliveryEvents.inc({ project: label, result: 'skipped' }, skipped)
    this.deps.status?.outcome('delivered', delivered)
    this.deps.status?.outcome('skipped', skipped)
  }
}
