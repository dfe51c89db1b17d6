/**
 * A delivery lane's state, changed only by `laneReducer`: the deliverer dispatches what happened (a lease taken, a
 * lease settled, an answer judged, a send slot refused) and acts on the change (logs, metrics, the rate limiter).
 * Every rule about when a lane sends, pauses, probes and resumes lives here or in `judge`, as pure functions.
 */
import type { Verdict } from './delivery-policy'

/** The first wait before probing a lane whose key was refused or whose service redirected; it doubles per probe. */
export const PROBE_MIN_MS = 5_000
export const PROBE_MAX_MS = 300_000

export interface LaneAlert {
  readonly cause: 'auth' | 'redirect'
  readonly reason: string
}

export interface LaneState {
  /** Leases being delivered now. */
  readonly inFlight: number
  /** Retry-After, failures in a row or a failing queue: nothing is sent on this lane before this time. */
  readonly pausedUntil: number
  /** A refused key or a redirect: sending paused until the next probe. */
  readonly alertPausedUntil: number
  /** A row of the lane the queue cannot read: no lease before this time (sends go on: retries, events before it). */
  readonly leasesFrom: number
  /** How long the probe after the next alert waits. */
  readonly probeBackoffMs: number
  /** Failed requests in a row (see `judge`). */
  readonly failures: number
  readonly alert: LaneAlert | undefined
}

export type LaneAction =
  | { readonly type: 'leased' }
  | { readonly type: 'settled' }
  /** A request was answered (or not) and judged at `now`. */
  | { readonly type: 'judged'; readonly verdict: Verdict; readonly now: number }
  /** Nothing may be sent before `until` (the queue holding the shared rate limit failed). */
  | { readonly type: 'paused'; readonly until: number }
  /** A lease stopped at a row the queue cannot read: the next lease waits until `until`. */
  | { readonly type: 'unreadable'; readonly until: number }

export const INITIAL_LANE_STATE: LaneState = {
  inFlight: 0,
  pausedUntil: 0,
  alertPausedUntil: 0,
  leasesFrom: 0,
  probeBackoffMs: PROBE_MIN_MS,
  failures: 0,
  alert: undefined
}

export function laneReducer(state: LaneState, action: LaneAction): LaneState {
  switch (action.type) {
    case 'leased':
      return { ...state, inFlight: state.inFlight + 1 }
    case 'settled':
      return { ...state, inFlight: Math.max(0, state.inFlight - 1) }
    case 'paused':
      return { ...state, pausedUntil: Math.max(state.pausedUntil, action.until) }
    case 'unreadable':
      return { ...state, leasesFrom: Math.max(state.leasesFrom, action.until) }
    case 'judged': {
      const { verdict, now } = action
      let next: LaneState = { ...state, failures: verdict.failures }
      // A delivered request ends an alert: the key works again (or the redirect is gone).
      if (verdict.fate?.kind === 'done' && next.alert)
        next = { ...next, alert: undefined, probeBackoffMs: PROBE_MIN_MS }
      if (verdict.alert)
        next = {
          ...next,
          alert: verdict.alert,
          alertPausedUntil: now + next.probeBackoffMs,
          probeBackoffMs: Math.min(PROBE_MAX_MS, next.probeBackoffMs * 2)
        }
      if (verdict.pauseUntil !== undefined)
        next = { ...next, pausedUntil: Math.max(next.pausedUntil, verdict.pauseUntil) }
      return next
    }
  }
}

/** When the lane may send again (now or later): the later of its pauses. */
export function sendsFrom(state: LaneState): number {
  return Math.max(state.pausedUntil, state.alertPausedUntil)
}

/** Whether the lane may take another lease at `now`: below its concurrency, not paused, not waiting on a bad row. */
export function mayLease(state: LaneState, concurrency: number, now: number): boolean {
  return state.inFlight < concurrency && now >= sendsFrom(state) && now >= state.leasesFrom
}
