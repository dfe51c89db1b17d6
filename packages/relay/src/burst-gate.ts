/**
 * Clients first during a burst of ingest, within a budget. The relay has one thread for HTTP, the queue and
 * delivery; while requests arrive fast (BURST_MIN_REQUESTS within BURST_IDLE_MS: a burst, not a client sending
 * now and then), each delivery lane leases at most once every BURST_LEASE_GAP_MS, so the
 * thread answers clients first (their events are on disk from the moment they are acknowledged, and are delivered
 * right after). That slowing is paid from a budget: DEFER_BUDGET_MS at most at a stretch, earned back at
 * DEFER_EARN_RATE of real time, and once spent not used again until DEFER_RESUME_MS is back. However clients
 * send — steadily, or in bursts with short pauses — delivery runs unslowed at least 1 / (1 + DEFER_EARN_RATE) of
 * the time over any long stretch (about 91 %). Time is real time (performance.now), not the relay's injected
 * clock: this is about sharing the CPU. See docs/relay-ingest.md.
 */

/** Ingest is busy while at least BURST_MIN_REQUESTS accepted requests are at most this old (ms)… */
export const BURST_IDLE_MS = 1_000
/** …(a request every 100 ms is not a burst: it never slows delivery)… */
export const BURST_MIN_REQUESTS = 50
/** …and then each lane leases at most once this often (ms)… */
export const BURST_LEASE_GAP_MS = 250
/** …for at most this long at a stretch (ms): the budget's size… */
export const DEFER_BUDGET_MS = 30_000
/** …earned back at this fraction of the time that passes (1 s per 10 s)… */
export const DEFER_EARN_RATE = 0.1
/** …and, once spent, not used again before this much of it is back (ms), so slowing never flickers on and off. */
export const DEFER_RESUME_MS = 10_000

export class BurstGate {
  /** When the last BURST_MIN_REQUESTS requests were accepted (a ring; `next` is the oldest). */
  private readonly recent = new Array<number>(BURST_MIN_REQUESTS).fill(-Infinity)
  private next = 0
  private readonly lastLease = new Map<string, number>()
  /** Slowing delivery may still take this long (ms). */
  private budget = DEFER_BUDGET_MS
  /** The budget was spent: no slowing until DEFER_RESUME_MS of it is back. */
  private spent = false
  /** When the budget was last brought up to date, and whether delivery was being slowed since then. */
  private accountedAt: number
  private slowing = false

  constructor(private readonly now: () => number = () => performance.now()) {
    this.accountedAt = now()
  }

  /** An ingest request was accepted. */
  ingested(): void {
    this.account()
    this.recent[this.next] = this.now()
    this.next = (this.next + 1) % BURST_MIN_REQUESTS
  }

  /** Whether `lane` may lease now; when it may, the lease is counted from now. */
  mayLease(lane: string): boolean {
    const t = this.account()
    // The oldest of the last BURST_MIN_REQUESTS requests is recent: requests are arriving fast.
    this.slowing = !this.spent && t - (this.recent[this.next] as number) <= BURST_IDLE_MS
    if (this.slowing && t - (this.lastLease.get(lane) ?? -Infinity) < BURST_LEASE_GAP_MS) return false
    this.lastLease.set(lane, t)
    return true
  }

  /** Charges the time since the last call to the budget (if delivery was slowed) or earns it back; returns now. */
  private account(): number {
    const t = this.now()
    const elapsed = Math.max(0, t - this.accountedAt)
    this.accountedAt = t
    if (this.slowing) {
      this.budget -= elapsed
      if (this.budget <= 0) {
        this.budget = 0
        this.spent = true
        this.slowing = false
      }
    } else {
      this.budget = Math.min(DEFER_BUDGET_MS, this.budget + elapsed * DEFER_EARN_RATE)
      if (this.spent && this.budget >= DEFER_RESUME_MS) this.spent = false
    }
    return t
  }
}
