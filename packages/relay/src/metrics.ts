import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { logWriteErrors } from './logger'

/** The relay's Prometheus metrics (prefix `relay_`), on a registry of its own per relay instance. */
export function createMetrics() {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
    new Counter<L>({ name, help, labelNames, registers: [registry] })
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
    new Gauge<L>({ name, help, labelNames, registers: [registry] })
  return {
    registry,
    ingestRequests: counter('relay_ingest_requests_total', 'HTTP requests to the ingest API, by route and status', [
      'route',
      'status'
    ]),
    ingestEvents: counter(
      'relay_ingest_events_total',
      'Events received, by type and result (queued, duplicate; refused: a whole request refused with 4xx)',
      ['type', 'result']
    ),
    ingestRejected: counter(
      'relay_ingest_rejected_total',
      'Events of an accepted request rejected one by one (kept as dead letters), by reason',
      ['reason']
    ),
    ingestDuration: new Histogram({
      name: 'relay_ingest_request_duration_seconds',
      help: 'Ingest request time, durable commit included',
      labelNames: ['route'],
      registers: [registry]
    }),
    webhookRequests: counter(
      'relay_webhook_requests_total',
      '1Flow survey-response webhooks received, by source and status',
      ['source', 'status']
    ),
    deliveryRequests: counter(
      'relay_delivery_requests_total',
      'Requests to 1Flow (/identify, /track, /batch) and to Segment (/v1/batch), by endpoint and status code (0 = no answer)',
      ['endpoint', 'status_code']
    ),
    deliveryLatency: new Histogram({
      name: 'relay_delivery_latency_seconds',
      help: 'From acceptance at ingest to delivery (1Flow or Segment answered 2xx), per lane: queueing, retries and pauses included',
      labelNames: ['project'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400],
      registers: [registry]
    }),
    buildInfo: new Gauge({
      name: 'relay_build_info',
      help: 'Always 1; the relay version and Node.js version as labels',
      labelNames: ['version', 'node'],
      registers: [registry]
    }),
    deliveryEvents: counter(
      'relay_delivery_events_total',
      'Events leaving the queue, by result (delivered, skipped, dead)',
      ['project', 'result']
    ),
    retries: counter('relay_delivery_retries_total', 'Events scheduled for another attempt, by reason', [
      'project',
      'reason'
    ]),
    skipped: counter('relay_skipped_events_total', 'Events mapped to nothing (not sent), by reason', [
      'project',
      'reason'
    ]),
    deadLetters: counter('relay_dead_letters_total', 'Events moved to the dead-letter store, by reason', [
      'project',
      'reason'
    ]),
    deadLettersRemoved: counter(
      'relay_dead_letters_removed_total',
      'Dead letters deleted by retention: older than limits.deadLetterRetentionDays (age), or the oldest past limits.deadLetterMaxBytes (size)',
      ['reason']
    ),
    logWriteErrors: new Counter({
      name: 'relay_log_write_errors_total',
      help: 'Log lines dropped because standard output could not take them (a full disk, a closed pipe)',
      registers: [registry],
      collect() {
        this.reset()
        this.inc(logWriteErrors.count)
      }
    }),
    queueDepth: gauge('relay_queue_depth', 'Events in the queue, by state', ['state']),
    oldestAge: gauge('relay_queue_oldest_age_seconds', 'Age of the oldest event not yet delivered', []),
    sendRateLimit: gauge(
      'relay_send_rate_limit',
      'Current requests/s limit per lane: a 1Flow project, or segment:<source> (cut by 30% on 429s)',
      ['project']
    ),
    paused: gauge(
      'relay_paused',
      '1 while sending on a lane (a 1Flow project, or segment:<source>) is paused, by reason (retry_after, auth, redirect)',
      ['project', 'reason']
    )
  }
}

export type Metrics = ReturnType<typeof createMetrics>
