/**
 * Clients first during a burst of ingest. The relay has one thread for HTTP, the queue and delivery; while
 * requests keep arriving, each delivery lane leases at most once every BURST_LEASE_GAP_MS, so the thread answers
 * clients first (their events are on disk from the moment they are acknowledged, and are delivered right after).
 * A burst that lasts BURST_MAX_MS is sustained load, and delivery takes its full share again. Time is real time
 * (performance.now), not the relay's injected clock: this is about sharing the CPU. See docs/relay-ingest.md.
 */

/** Ingest is busy while an accepted request is at most this old (ms)… */
export const BURST_IDLE_MS = 1_000
/** …and then each lane leases at most once this often (ms)… */
export const BURST_LEASE_GAP_MS = 250
/** …for at most this long into the burst (ms). */
export const BURST_MAX_MS = 30_000

export class BurstGate {
  private ingestAt = -Infinity
  private burstSince = -Infinity
  private readonly lastLease = new Map<string, number>()

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** An ingest request was accepted. */
  ingested(): void {
    const t = this.now()
    if (t - this.ingestAt > BURST_IDLE_MS) this.burstSince = t
    this.ingestAt = t
  }

  /** Whether `lane` may lease now; when it may, the lease is counted from now. */
  mayLease(lane: string): boolean {
    const t = this.now()
    const inBurst = t - this.ingestAt <= BURST_IDLE_MS && t - this.burstSince < BURST_MAX_MS
    if (inBurst && t - (this.lastLease.get(lane) ?? -Infinity) < BURST_LEASE_GAP_MS) return false
    this.lastLease.set(lane, t)
    return true
  }
}
