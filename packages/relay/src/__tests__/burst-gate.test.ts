import { describe, expect, it } from 'vitest'
import { BURST_IDLE_MS, BURST_LEASE_GAP_MS, BURST_MAX_MS, BurstGate } from '../burst-gate'

function gate() {
  let t = 1_000_000
  const g = new BurstGate(() => t)
  return { g, advance: (ms: number) => (t += ms) }
}

describe('BurstGate: clients first during a burst of ingest', () => {
  it('lets every lease through while nothing is ingested', () => {
    const { g } = gate()
    expect([g.mayLease('a'), g.mayLease('a'), g.mayLease('a')]).toEqual([true, true, true])
  })

  it('during a burst, lets each lane lease once per gap, each lane on its own', () => {
    const { g, advance } = gate()
    g.ingested()
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
    g.ingested()
    expect(g.mayLease('a')).toBe(true)
    advance(BURST_IDLE_MS + 1)
    expect([g.mayLease('a'), g.mayLease('a')]).toEqual([true, true])
  })

  it('treats a burst longer than BURST_MAX_MS as sustained load: delivery takes its full share again', () => {
    const { g, advance } = gate()
    for (let elapsed = 0; elapsed < BURST_MAX_MS; elapsed += 500) {
      g.ingested()
      advance(500)
    }
    g.ingested()
    expect([g.mayLease('a'), g.mayLease('a')]).toEqual([true, true])
    // A pause ends it; the next burst gets its own BURST_MAX_MS.
    advance(BURST_IDLE_MS + 1)
    g.ingested()
    expect([g.mayLease('a'), g.mayLease('a')]).toEqual([true, false])
  })
})
