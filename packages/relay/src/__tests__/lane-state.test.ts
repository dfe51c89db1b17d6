import { describe, expect, it } from 'vitest'
import type { Verdict } from '../delivery-policy'
import {
  INITIAL_LANE_STATE,
  laneReducer,
  mayLease,
  PROBE_MAX_MS,
  PROBE_MIN_MS,
  sendsFrom,
  type LaneAction,
  type LaneState
} from '../lane-state'

const run = (actions: LaneAction[], from: LaneState = INITIAL_LANE_STATE) => actions.reduce(laneReducer, from)
const judged = (verdict: Verdict, now: number): LaneAction => ({ type: 'judged', verdict, now })
const refused: Verdict = {
  fate: { kind: 'release' },
  proceed: false,
  failures: 0,
  alert: { cause: 'auth', reason: '1Flow refused the API key (401)' }
}
const delivered: Verdict = { fate: { kind: 'done' }, proceed: true, failures: 0 }

describe('a lane’s state (laneReducer)', () => {
  it('counts leases in flight and takes no more than its concurrency', () => {
    const two = run([{ type: 'leased' }, { type: 'leased' }])
    expect(two.inFlight).toBe(2)
    expect(mayLease(two, 2, 0)).toBe(false)
    expect(mayLease(run([{ type: 'settled' }], two), 2, 0)).toBe(true)
    // A settle never takes the count below zero (each lease settles once, but the state must not go wrong if not).
    expect(run([{ type: 'settled' }]).inFlight).toBe(0)
  })

  it('a row the queue cannot read holds back leases until the time asked for, never sends', () => {
    const stopped = run([
      { type: 'unreadable', until: 5_000 },
      { type: 'unreadable', until: 3_000 }
    ])
    expect(mayLease(stopped, 8, 4_999)).toBe(false)
    expect(mayLease(stopped, 8, 5_000)).toBe(true)
    expect(sendsFrom(stopped)).toBe(0)
  })

  it('pauses until the latest pause asked for, never shortening one', () => {
    const paused = run([
      judged(
        { fate: { kind: 'retry', at: 9_000, error: '503' }, proceed: false, failures: 3, pauseUntil: 9_000 },
        1_000
      ),
      { type: 'paused', until: 2_000 }
    ])
    expect(paused.pausedUntil).toBe(9_000)
    expect(paused.failures).toBe(3)
    expect(mayLease(paused, 8, 8_999)).toBe(false)
    expect(mayLease(paused, 8, 9_000)).toBe(true)
  })

  it('on a refused key: alert, probes backing off from 5 s to at most 5 min, and a delivery ends it', () => {
    let state = run([judged(refused, 0)])
    expect(state.alert?.cause).toBe('auth')
    expect(state.alertPausedUntil).toBe(PROBE_MIN_MS)
    expect(sendsFrom(state)).toBe(PROBE_MIN_MS)
    const waits: number[] = []
    for (let probe = 0, now = 0; probe < 10; probe++) {
      now = state.alertPausedUntil
      state = laneReducer(state, judged(refused, now))
      waits.push(state.alertPausedUntil - now)
    }
    expect(waits.slice(0, 4)).toEqual([10_000, 20_000, 40_000, 80_000])
    expect(Math.max(...waits)).toBe(PROBE_MAX_MS)
    const resumed = laneReducer(state, judged(delivered, state.alertPausedUntil))
    expect(resumed.alert).toBeUndefined()
    expect(resumed.probeBackoffMs).toBe(PROBE_MIN_MS)
    // The next alert starts over from the shortest probe wait.
    expect(laneReducer(resumed, judged(refused, 1_000_000)).alertPausedUntil).toBe(1_000_000 + PROBE_MIN_MS)
  })

  it('keeps an alert through answers that are not deliveries', () => {
    const state = run([
      judged(refused, 0),
      judged({ fate: { kind: 'retry', at: 7_000, error: 'no answer' }, proceed: false, failures: 1 }, 6_000)
    ])
    expect(state.alert?.cause).toBe('auth')
    expect(state.failures).toBe(1)
  })

  it('never changes the state it was given', () => {
    const frozen = Object.freeze({ ...INITIAL_LANE_STATE })
    run([{ type: 'leased' }, judged(refused, 0), { type: 'paused', until: 5 }], frozen)
    expect(frozen).toEqual(INITIAL_LANE_STATE)
  })
})
