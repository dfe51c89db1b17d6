/**
 * What the deliverer sends to, one sink per direction: 1Flow's HTTP API (Segment events mapped by core) and
 * Segment's HTTP Tracking API (1Flow survey responses, already converted to track events at the webhook).
 * A sink plans a lease — the requests that carry its jobs, each packed once, and the jobs that need no
 * request — and names the service for messages; everything else (leases, rate limits, retries, pauses, dead
 * letters) is the deliverer's, the same for both.
 */
import {
  buildRequest,
  mapWithPresets,
  packBatches,
  ONEFLOW_LIMITS,
  PayloadTooLargeError,
  SEGMENT_LIMITS,
  segmentBatchBody,
  toBatchItem,
  utf8ByteLength,
  type Command,
  type OneFlowRequest,
  type ResponseParty,
  type SegmentEvent
} from '@oneflow-seg/core'
import { mapWithSubscriptions } from '@oneflow-seg/core/mapping'
import type { RelayConfig, SegmentTarget, SourceConfig } from './config'
import type { Metrics } from './metrics'
import type { Job } from './queue/queue'
import type { Clock } from './rate-limiter'
import { VERSION } from './version'

/** One thing to send, with the job (queue row) it came from. */
export interface Unit<T = unknown> {
  readonly item: T
  readonly jobId: number
}

export type JobFate =
  | { kind: 'done'; skipped?: boolean }
  | { kind: 'retry'; at: number; error: string; rateLimited?: boolean }
  | { kind: 'dead'; reason: string; status?: number; response?: string; sent?: boolean }
  | { kind: 'release' }

export interface HttpRequest {
  readonly url: string
  /** For logs and metrics, e.g. `/batch`. */
  readonly path: string
  readonly headers: Record<string, string>
  readonly body: string
}

/** One request to send and the units it carries. */
export interface PlannedRequest<T = unknown> {
  readonly units: ReadonlyArray<Unit<T>>
  readonly request: HttpRequest
}

/** What to do with a lease: the requests to send, in order, and the fates already decided without one. */
export interface Plan<T = unknown> {
  readonly requests: ReadonlyArray<PlannedRequest<T>>
  /** Every job's fate so far: `done` (also when skipped), or `dead` when it cannot be sent at all. */
  readonly settled: ReadonlyArray<readonly [jobId: number, fate: JobFate]>
}

export interface Sink<T = unknown> {
  /** Who answers, for decisions' reasons and alerts. */
  readonly party: ResponseParty
  /** Requests to 1Flow are what the status page charts against the limit. */
  readonly isOneFlow: boolean
  /** How many jobs to lease at once. */
  leaseLimit(): number
  /** Leased jobs → the requests that carry them (each packed once), and the jobs settled without a request. */
  plan(jobs: readonly Job[]): Plan<T>
  /** The request for some units of a planned request (the halves of a batch the service found too large). */
  request(units: ReadonlyArray<Unit<T>>): HttpRequest
}

const BATCH_EVENTS = 500

/** 1Flow's HTTP API: Segment events mapped by core (presets or the source's subscriptions), sent as /batch or one by one. */
export class OneFlowSink implements Sink<Command> {
  readonly party = { service: '1Flow', credential: 'the project API key' }
  readonly isOneFlow = true
  private readonly target: { apiBaseUrl: string; projectApiKey: string }

  constructor(
    private readonly source: SourceConfig,
    private readonly sourcesByName: ReadonlyMap<string, SourceConfig>,
    private readonly config: RelayConfig['oneflow'],
    private readonly metrics: Metrics
  ) {
    this.target = { apiBaseUrl: config.apiBaseUrl, projectApiKey: source.projectApiKey }
  }

  leaseLimit(): number {
    // In single mode a lease holds at most one second of requests at full rate, so it is sent well within its lease.
    return this.config.mode === 'single'
      ? Math.min(BATCH_EVENTS, Math.ceil(this.config.maxRequestsPerSecond))
      : BATCH_EVENTS
  }

  plan(jobs: readonly Job[]): Plan<Command> {
    const settled: Array<readonly [number, JobFate]> = []
    const units: Array<Unit<Command>> = []
    for (const job of jobs) {
      settled.push([job.id, { kind: 'done' }])
      let results
      try {
        const event = JSON.parse(job.body) as SegmentEvent
        const source = this.sourcesByName.get(job.sourceName)
        const options = { consentCategories: source?.consentCategories ?? [] }
        results = source?.subscriptions
          ? mapWithSubscriptions(event, source.subscriptions, options)
          : mapWithPresets(event, options)
      } catch (error) {
        settled.push([job.id, { kind: 'dead', reason: `could not map the event: ${(error as Error).message}` }])
        continue
      }
      for (const { outcome } of results) {
        if (outcome.kind === 'skip') this.metrics.skipped.inc({ project: this.source.name, reason: outcome.reason })
        else if (outcome.kind === 'invalid') settled.push([job.id, { kind: 'dead', reason: outcome.error.message }])
        else units.push({ item: outcome, jobId: job.id })
      }
      if (results.every((r) => r.outcome.kind === 'skip')) settled.push([job.id, { kind: 'done', skipped: true }])
    }
    const tooLarge = (unit: Unit<Command>, error: PayloadTooLargeError) =>
      settled.push([unit.jobId, { kind: 'dead', reason: error.message, status: 413 }])
    const requests: Array<PlannedRequest<Command>> = []
    if (this.config.mode === 'single') {
      for (const unit of units) {
        try {
          requests.push({ units: [unit], request: toHttp(buildRequest(unit.item, this.target)) })
        } catch (error) {
          if (!(error instanceof PayloadTooLargeError)) throw error
          tooLarge(unit, error)
        }
      }
      return { requests, settled }
    }
    const { batches, tooLarge: oversize } = packBatches(
      units.map((u) => u.item),
      this.target
    )
    for (const i of oversize) {
      const unit = units[i] as Unit<Command>
      tooLarge(
        unit,
        new PayloadTooLargeError(utf8ByteLength(JSON.stringify(toBatchItem(unit.item))), ONEFLOW_LIMITS.maxRequestBytes)
      )
    }
    for (const b of batches)
      requests.push({ units: b.indices.map((i) => units[i] as Unit<Command>), request: toHttp(b.request) })
    return { requests, settled }
  }

  request(units: ReadonlyArray<Unit<Command>>): HttpRequest {
    if (this.config.mode === 'single') return toHttp(buildRequest((units[0] as Unit<Command>).item, this.target))
    return toHttp(
      packBatches(
        units.map((u) => u.item),
        this.target
      ).batches[0]?.request as OneFlowRequest
    )
  }
}

const toHttp = (req: OneFlowRequest): HttpRequest => ({
  url: req.url,
  path: req.path,
  headers: req.headers,
  body: req.body
})

/** Segment's HTTP Tracking API: `/v1/batch` with the Segment source's write key as Basic auth. */
export class SegmentSink implements Sink<string> {
  readonly party = { service: 'Segment', credential: 'the Segment write key' }
  readonly isOneFlow = false
  private readonly authorization: string

  constructor(
    private readonly target: SegmentTarget,
    private readonly clock: Clock
  ) {
    this.authorization = `Basic ${Buffer.from(`${target.writeKey}:`).toString('base64')}`
  }

  leaseLimit(): number {
    return BATCH_EVENTS
  }

  plan(jobs: readonly Job[]): Plan<string> {
    // The body is the converted track event, stored as JSON at the webhook: sent as it is.
    const settled: Array<readonly [number, JobFate]> = []
    const requests: Array<PlannedRequest<string>> = []
    let current: Array<Unit<string>> = []
    let bytes = 0
    const close = () => {
      if (current.length > 0) requests.push({ units: current, request: this.request(current) })
      current = []
      bytes = 0
    }
    for (const job of jobs) {
      settled.push([job.id, { kind: 'done' }])
      const size = utf8ByteLength(job.body)
      if (size > SEGMENT_LIMITS.eventBytes) {
        settled.push([
          job.id,
          {
            kind: 'dead',
            reason: `the event is ${size} bytes; Segment accepts at most ${SEGMENT_LIMITS.eventBytes} per event`,
            status: 413
          }
        ])
        continue
      }
      if (current.length > 0 && bytes + size + 1 > SEGMENT_LIMITS.batchPackBytes) close()
      current.push({ item: job.body, jobId: job.id })
      bytes += size + 1
    }
    close()
    return { requests, settled }
  }

  request(units: ReadonlyArray<Unit<string>>): HttpRequest {
    const sentAt = new Date(this.clock.now()).toISOString()
    return {
      url: `${this.target.host}/v1/batch`,
      path: '/v1/batch',
      headers: {
        'content-type': 'application/json',
        authorization: this.authorization,
        'user-agent': `oneflow-relay/${VERSION}`
      },
      body: segmentBatchBody(
        units.map((u) => u.item),
        sentAt
      )
    }
  }
}
