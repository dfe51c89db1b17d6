import { describe, expect, it } from 'vitest'
import {
  BURST_IDLE_MS,
  BURST_MIN_REQUESTS,
  BURST_LEASE_GAP_MS,
  DEFER_BUDGET_MS,
  DEFER_EARN_RATE,
  DEFER_RESUME_MS,
  RATE_RISE,
  RATE_SECONDS,
  USEFUL_MIN_BUSY,
  USEFUL_WINDOW_MS,
  BurstGate
} from '../burst-gate'

/** A gate on a fake clock and a fake thread, busy `busy` of the time (all of it unless set). */
function gate() {
  let t = 1_000_000
  const loop = { active: 0, idle: 0 }
  let busy = 1
  const g = new BurstGate(
    () => t,
    () => ({ ...loop })
  )
  const advance = (ms: number) => {
    loop.active += ms * busy
    loop.idle += ms * (1 - busy)
    return (t += ms)
  }
  return { g, advance, now: () => t, setBusy: (share: number) => (busy = share) }
}

/** BURST_MIN_REQUESTS requests at once: a burst. */
const burstOf = (g: BurstGate) => {
  for (let i = 0; i < BURST_MIN_REQUESTS; i++) g.ingested()
}

/**
 * A lane that would lease every `everyMs` while clients send by `sends(t)` (a request at each ms it returns
 * true): the share of the leases it would take with nobody sending that the gate lets through.
 */
function deliveryShare(sends: (t: number) => boolean, durationMs: number, everyMs = 10): number {
  const { g, advance, now } = gate()
  const start = now()
  let allowed = 0
  let wanted = 0
  for (let elapsed = 0; elapsed < durationMs; elapsed++) {
    if (sends(now() - start)) g.ingested()
    if (elapsed % everyMs === 0) {
      wanted++
      if (g.mayLease('a')) allowed++
    }
    advance(1)
  }
  return allowed / wanted
}

describe('BurstGate: clients first during a burst of ingest', () => {
  it('lets every lease through while nothing is ingested', () => {
    const { g } = gate()
    expect([g.mayLease('a'), g.mayLease('a'), g.mayLease('a')]).toEqual([true, true, true])
  })

  it('a few requests are not a burst: nothing is slowed', () => {
    const { g } = gate()
    for (let i = 0; i < BURST_MIN_REQUESTS - 1; i++) g.ingested()
    expect([g.mayLease('a'), g.mayLease('a')]).toEqual([true, true])
  })

  it('during a burst, lets each lane lease once per gap, each lane on its own', () => {
    const { g, advance } = gate()
    burstOf(g)
    expect(g.mayLease('a')).toBe(true)
    expect(g.mayLease('a')).toBe(false)
    expect(g.mayLease('b')).toBe(true)
    advance(BURST_LEASE_GAP_MS - 1)
    g.ingested()
    expect(g.mayLease('a')).toBe(false)
    advance(1)
    expect(g.mayLease('a')).toBe(true)
    expect(g.mayLease('a')).toBe(false)
  })

  it('ends the burst once no request has come for BURST_IDLE_MS', () => {
    const { g, advance } = gate()
    burstOf(g)
    expect(g.mayLease('a')).toBe(true)
    advance(BURST_IDLE_MS + 1)
    expect([g.mayLease('a'), g.mayLease('a')]).toEqual([true, true])
  })

  it('slows delivery for at most DEFER_BUDGET_MS at a stretch, then not again until DEFER_RESUME_MS is earned back', () => {
    const { g, advance } = gate()
    const burst = (ms: number) => {
      for (let elapsed = 0; elapsed < ms; elapsed += 100) {
        burstOf(g)
        g.mayLease('probe')
        advance(100)
      }
      burstOf(g)
    }
    burst(DEFER_BUDGET_MS + 200)
    expect([g.mayLease('a'), g.mayLease('a')]).toEqual([true, true])
    // A pause does not start a new budget: the time it lasts earns back only DEFER_EARN_RATE of itself.
    advance(BURST_IDLE_MS + 100)
    g.mayLease('a')
    burstOf(g)
    expect([g.mayLease('a'), g.mayLease('a')]).toEqual([true, true])
    // Once DEFER_RESUME_MS is back, a burst is slowed again.
    advance(DEFER_RESUME_MS / DEFER_EARN_RATE)
    g.mayLease('a')
    burstOf(g)
    expect([g.mayLease('b'), g.mayLease('b')]).toEqual([true, false])
  })

  it('a request every 100 ms with a 1.1 s pause every 28 s does not slow delivery at all', () => {
    const share = deliveryShare((t) => t % 29_100 < 28_000 && t % 100 === 0, 10 * 60_000)
    expect(share).toBe(1)
  })

  it('200 requests/s with a 1.1 s pause every 28 s leaves delivery at least half its idle share (here ≥ 85 %)', () => {
    const share = deliveryShare((t) => t % 29_100 < 28_000 && t % 5 === 0, 10 * 60_000)
    expect(share).toBeGreaterThanOrEqual(0.85)
  })

  it('200 requests/s for ten minutes: delivery unslowed at least 1 / (1 + DEFER_EARN_RATE) of the time', () => {
    const share = deliveryShare((t) => t % 5 === 0, 10 * 60_000)
    expect(share).toBeGreaterThanOrEqual(1 / (1 + DEFER_EARN_RATE) - 0.05)
  })

  it('stops slowing for the rest of a burst once clients leave the thread idle (a steady rate it keeps up with)', () => {
    const { g, advance, setBusy } = gate()
    // Clients send 100 requests/s; answering them keeps the thread busy only half the time.
    setBusy(USEFUL_MIN_BUSY / 2)
    const second = () => {
      let allowed = 0
      for (let ms = 0; ms < 1_000; ms += 10) {
        g.ingested()
        if (g.mayLease('a')) allowed++
        advance(10)
      }
      return allowed
    }
    burstOf(g)
    expect(second()).toBeLessThanOrEqual(1_000 / BURST_LEASE_GAP_MS)
    // After one window of slowing that bought the clients nothing, every lease goes through…
    for (let s = 0; s < USEFUL_WINDOW_MS / 1_000; s++) second()
    expect(second()).toBe(100)
    // …and stays so while the burst goes on, though delivery now fills the thread.
    setBusy(1)
    expect(second()).toBe(100)
    // A new burst (after a pause longer than BURST_IDLE_MS) that keeps the thread busy is slowed again.
    advance(BURST_IDLE_MS + 1)
    g.mayLease('a')
    burstOf(g)
    expect(second()).toBeLessThanOrEqual(1_000 / BURST_LEASE_GAP_MS + 1)
  })

  it('keeps slowing while clients keep the thread busy', () => {
    const { g, advance, setBusy } = gate()
    setBusy(USEFUL_MIN_BUSY + (1 - USEFUL_MIN_BUSY) / 2)
    burstOf(g)
    let allowed = 0
    for (let ms = 0; ms < 10 * USEFUL_WINDOW_MS; ms += 10) {
      g.ingested()
      if (g.mayLease('a')) allowed++
      advance(10)
    }
    expect(allowed).toBeLessThanOrEqual((10 * USEFUL_WINDOW_MS) / BURST_LEASE_GAP_MS + 1)
  })

  it('slows again when a gentle start turns into a blast without a pause (requests RATE_RISE times faster)', () => {
    const { g, advance, setBusy } = gate()
    /** One second of clients sending `perTenMs` requests every 10 ms; the leases the gate let through. */
    const second = (perTenMs: number) => {
      let allowed = 0
      for (let ms = 0; ms < 1_000; ms += 10) {
        for (let i = 0; i < perTenMs; i++) g.ingested()
        if (g.mayLease('a')) allowed++
        advance(10)
      }
      return allowed
    }
    // 100 requests/s leave the thread half idle: slowing stops after a window.
    setBusy(USEFUL_MIN_BUSY / 2)
    burstOf(g)
    second(1)
    second(1)
    expect(second(1)).toBe(100)
    // The same clients at the same rate, the thread now busy with delivery: still not slowed.
    setBusy(1)
    expect(second(1)).toBe(100)
    // Then a blast, RATE_RISE × 10 as fast, keeping the thread busy: slowed again once the last RATE_SECONDS show
    // it, and kept so.
    const blast = Math.ceil(RATE_RISE * 10)
    for (let s = 0; s < RATE_SECONDS; s++) second(blast)
    for (let s = 0; s < 5; s++) expect(second(blast)).toBeLessThanOrEqual(1_000 / BURST_LEASE_GAP_MS + 1)
  })

  it('clients flushing in clumps once a second (the same rate on average) never have slowing switched back on', () => {
    const { g, advance, setBusy } = gate()
    setBusy(USEFUL_MIN_BUSY / 2)
    // 120 requests in the first 10 ms of each second for ten minutes; the delivery loop asks every 50–200 ms.
    let seed = 7
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31
    let refused = 0
    let next = 0
    for (let ms = 0; ms < 600_000; ms++) {
      if (ms % 1_000 < 10) for (let i = 0; i < 12; i++) g.ingested()
      if (ms >= next) {
        next = ms + 50 + Math.floor(random() * 150)
        if (!g.mayLease('a') && ms > 5_000) refused++
      }
      advance(1)
    }
    expect(refused).toBe(0)
  })
})
