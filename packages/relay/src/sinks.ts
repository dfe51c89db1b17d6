/**
 * What the deliverer sends to, one sink per direction: 1Flow's HTTP API (Segment events mapped by core) and
 * Segment's HTTP Tracking API (1Flow survey responses, already converted to track events at the webhook).
 * A sink turns leased jobs into units, units into requests, and names the service for messages; everything
 * else — leases, rate limits, retries, pauses, dead letters — is the deliverer's, the same for both.
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

export type JobFate = { kind: 'done'; skipped?: boolean } | { kind: 'retry'; at: number; error: string } | { kind: 'dead'; reason: string; status?: number; response?: string } | { kind: 'release' }
export type Settle = (jobId: number, fate: JobFate) => void

export interface HttpRequest {
  readonly url: string
  /** For logs and metrics, e.g. `/batch`. */
  readonly path: string
  readonly headers: Record<string, string>
  readonly body: string
}

export interface Sink<T = unknown> {
  /** Who answers, for decisions' reasons and alerts. */
  readonly party: ResponseParty
  /** Requests to 1Flow are what the status page charts against the limit. */
  readonly isOneFlow: boolean
  /** How many jobs to lease at once. */
  leaseLimit(): number
  /** Jobs → units; a job that cannot be sent is settled here (dead) and one that needs nothing is `done`. */
  prepare(jobs: readonly Job[], settle: Settle): Array<Unit<T>>
  /** Units → the groups that go in one request each, in order; a unit too large for any request is settled dead. */
  group(units: ReadonlyArray<Unit<T>>, settle: Settle): Array<Array<Unit<T>>>
  request(group: ReadonlyArray<Unit<T>>): HttpRequest
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
    return this.config.mode === 'single' ? Math.min(BATCH_EVENTS, Math.ceil(this.config.maxRequestsPerSecond)) : BATCH_EVENTS
  }

  prepare(jobs: readonly Job[], settle: Settle): Array<Unit<Command>> {
    const units: Array<Unit<Command>> = []
    for (const job of jobs) {
      settle(job.id, { kind: 'done' })
      let results
      try {
        const event = JSON.parse(job.body) as SegmentEvent
        const subscriptions = this.sourcesByName.get(job.sourceName)?.subscriptions
        results = subscriptions ? mapWithSubscriptions(event, subscriptions) : mapWithPresets(event)
      } catch (error) {
        settle(job.id, { kind: 'dead', reason: `could not map the event: ${(error as Error).message}` })
        continue
      }
      for (const { outcome } of results) {
        if (outcome.kind === 'skip') this.metrics.skipped.inc({ project: this.source.name, reason: outcome.reason })
        else if (outcome.kind === 'invalid') settle(job.id, { kind: 'dead', reason: outcome.error.message })
        else units.push({ item: outcome, jobId: job.id })
      }
      if (results.every((r) => r.outcome.kind === 'skip')) settle(job.id, { kind: 'done', skipped: true })
    }
    return units
  }

  group(units: ReadonlyArray<Unit<Command>>, settle: Settle): Array<Array<Unit<Command>>> {
    const groups: Array<Array<Unit<Command>>> = []
    if (this.config.mode === 'single') {
      for (const unit of units) {
        try {
          buildRequest(unit.item, this.target)
          groups.push([unit])
        } catch (error) {
          if (!(error instanceof PayloadTooLargeError)) throw error
          settle(unit.jobId, { kind: 'dead', reason: error.message, status: 413 })
        }
      }
      return groups
    }
    const { batches, tooLarge } = packBatches(
      units.map((u) => u.item),
      this.target
    )
    for (const i of tooLarge) {
      const unit = units[i] as Unit<Command>
      const bytes = utf8ByteLength(JSON.stringify(toBatchItem(unit.item)))
      settle(unit.jobId, { kind: 'dead', reason: new PayloadTooLargeError(bytes, ONEFLOW_LIMITS.maxRequestBytes).message, status: 413 })
    }
    for (const b of batches) groups.push(b.indices.map((i) => units[i] as Unit<Command>))
    return groups
  }

  request(group: ReadonlyArray<Unit<Command>>): HttpRequest {
    const req: OneFlowRequest =
      this.config.mode === 'single'
        ? buildRequest((group[0] as Unit<Command>).item, this.target)
        : (packBatches(
            group.map((u) => u.item),
            this.target
          ).batches[0]?.request as OneFlowRequest)
    return { url: req.url, path: req.path, headers: req.headers, body: req.body }
  }
}

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

  prepare(jobs: readonly Job[], settle: Settle): Array<Unit<string>> {
    // The body is the converted track event, stored as JSON at the webhook: sent as it is.
    return jobs.map((job) => {
      settle(job.id, { kind: 'done' })
      return { item: job.body, jobId: job.id }
    })
  }

  group(units: ReadonlyArray<Unit<string>>, settle: Settle): Array<Array<Unit<string>>> {
    const groups: Array<Array<Unit<string>>> = []
    let current: Array<Unit<string>> = []
    let bytes = 0
    for (const unit of units) {
      const size = utf8ByteLength(unit.item)
      if (size > SEGMENT_LIMITS.eventBytes) {
        settle(unit.jobId, { kind: 'dead', reason: `the event is ${size} bytes; Segment accepts at most ${SEGMENT_LIMITS.eventBytes} per event`, status: 413 })
        continue
      }
      if (current.length > 0 && bytes + size + 1 > SEGMENT_LIMITS.batchPackBytes) {
        groups.push(current)
        current = []
        bytes = 0
      }
      current.push(unit)
      bytes += size + 1
    }
    if (current.length > 0) groups.push(current)
    return groups
  }

  request(group: ReadonlyArray<Unit<string>>): HttpRequest {
    const sentAt = new Date(this.clock.now()).toISOString()
    return {
      url: `${this.target.host}/v1/batch`,
      path: '/v1/batch',
      headers: { 'content-type': 'application/json', authorization: this.authorization, 'user-agent': `oneflow-relay/${VERSION}` },
      body: segmentBatchBody(
        group.map((u) => u.item),
        sentAt
      )
    }
  }
}
