/**
 * What one answer means for the units it carried and for their lane, as a pure function: the deliverer applies
 * the verdict (queue writes, lane state, metrics, logs); every rule lives here. The rules are in docs/delivery.md.
 */
import { fullJitterDelay, type Decision } from '@oneflow-seg/core'
import type { JobFate } from './sinks'

/** Failed requests in a row from which the whole lane backs off, so a service that is down is not hammered. */
export const FAILURES_BEFORE_PAUSE = 3
/** Full-jitter backoff never waits longer than this between tries. */
export const MAX_BACKOFF_MS = 60_000

export interface Verdict {
  /** The fate of every unit the request carried; absent when the request is to be split in halves and sent again. */
  readonly fate?: JobFate
  /** 413 on a request of several units: send each half. */
  readonly split?: true
  /** Whether the rest of the lease may be sent now (false: it is released untried, its users' order holds). */
  readonly proceed: boolean
  /** Failed requests in a row on the lane, after this answer. */
  readonly failures: number
  /** Nothing more is sent on this lane before this time (Retry-After, or failures in a row). */
  readonly pauseUntil?: number
  /** The service's Retry-After, in ms. */
  readonly retryAfterMs?: number
  /** The lane stops until its setup is fixed (a refused key, a redirect); it is probed now and then. */
  readonly alert?: { readonly cause: 'auth' | 'redirect'; readonly reason: string }
  /** 429: the lane's rate is cut. */
  readonly throttled?: true
}

export interface Answered {
  /** HTTP status; undefined when there was no answer. */
  readonly status: number | undefined
  /** The response body (already cut short), kept with dead letters. */
  readonly body: string
  /** How many units the request carried. */
  readonly units: number
  readonly service: string
}

/** The verdict on one answer, given the lane's failures in a row so far. */
export function judge(
  decision: Decision,
  answer: Answered,
  failures: number,
  now: number,
  random: () => number
): Verdict {
  const { status, body, units, service } = answer
  switch (decision.action) {
    case 'deliver':
      return { fate: { kind: 'done' }, proceed: true, failures: 0 }
    case 'split':
      if (units > 1) return { split: true, proceed: true, failures: 0 }
      return {
        fate: {
          kind: 'dead',
          reason: `${service} refused the event as too large (413)`,
          status: 413,
          response: body,
          sent: true
        },
        proceed: true,
        failures: 0
      }
    case 'dead-letter':
      // A batch is refused whole for what may be one of its events: halves are sent until the refused events
      // are alone, as for 413, so one bad event never takes its neighbours with it.
      if (units > 1) return { split: true, proceed: true, failures: 0 }
      return {
        fate: {
          kind: 'dead',
          reason: decision.reason,
          ...(status !== undefined && { status }),
          response: body,
          sent: true
        },
        proceed: true,
        failures: 0
      }
    case 'pause':
      return {
        fate: { kind: 'release' },
        proceed: false,
        failures: 0,
        alert: { cause: decision.cause, reason: decision.reason }
      }
    case 'retry': {
      // The service's Retry-After says when to come back (never sooner than the base delay); without one,
      // full-jitter backoff growing with the failures in a row.
      const wait =
        decision.afterMs !== undefined
          ? Math.max(decision.afterMs, decision.backoffBaseMs)
          : fullJitterDelay(failures, random, decision.backoffBaseMs, MAX_BACKOFF_MS)
      const at = now + wait
      const next = failures + 1
      // A failed request holds back only its own users; Retry-After, or failures in a row (the service is
      // down), hold back the whole lane.
      const pauseLane = decision.afterMs !== undefined || next >= FAILURES_BEFORE_PAUSE
      return {
        fate: { kind: 'retry', at, error: decision.reason, ...(decision.throttled && { rateLimited: true }) },
        proceed: false,
        failures: next,
        ...(pauseLane && { pauseUntil: at }),
        ...(decision.afterMs !== undefined && { retryAfterMs: decision.afterMs }),
        ...(decision.throttled && { throttled: true as const })
      }
    }
  }
}
