/**
 * Clients first during a burst of ingest, within a budget. The relay has one thread for HTTP, the queue and
 * delivery; while requests arrive fast (BURST_MIN_REQUESTS within BURST_IDLE_MS: a burst, not a client sending
 * now and then), each delivery lane leases at most once every BURST_LEASE_GAP_MS, so the
 * thread answers clients first (their events are on disk from the moment they are acknowledged, and are delivered
 * right after). That slowing is paid from a budget: DEFER_BUDGET_MS at most at a stretch, earned back at
 * DEFER_EARN_RATE of real time, and once spent not used again until DEFER_RESUME_MS is back. However clients
 * send — steadily, or in bursts with short pauses — delivery runs unslowed at least 1 / (1 + DEFER_EARN_RATE) of
 * the time over any long stretch (about 91 %). Slowing is for clients that keep the thread busy: while it slows,
 * the thread's busy share is read every USEFUL_WINDOW_MS, and if ingest leaves it idle more than a tenth of the time
 * (clients sending steadily at a rate the relay keeps up with, not as fast as it answers) holding delivery back buys
 * them nothing, so it stops until the burst ends or requests come RATE_RISE times faster. Time is real time (performance.now), not the relay's injected
 * clock: this is about sharing the CPU. See docs/relay-ingest.md.
 */
import { performance } from 'node:perf_hooks'

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
/** While delivery is slowed, the thread's busy share is read once per this long (ms)… */
export const USEFUL_WINDOW_MS = 1_000
/** …and below this share, clients do not need the time slowing gives them: it stops until the burst ends… */
export const USEFUL_MIN_BUSY = 0.9
/** …or until requests arrive this many times faster than when it stopped (a blast after a gentle start)… */
export const RATE_RISE = 1.5
/**
 * …both rates counted in whole seconds of real time and averaged over the last RATE_SECONDS of them, so that clients
 * flushing in clumps once a second read the same from one second to the next.
 */
export const RATE_SECONDS = 3

/** The event loop's time so far (ms), busy and idle: what performance.eventLoopUtilization() reports. */
export interface LoopTime {
  readonly active: number
  readonly idle: number
}

/** The busy share of the thread between two readings of its loop time (1 when no time passed). */
function busyShare(from: LoopTime, to: LoopTime): number {
  const active = to.active - from.active
  const total = active + to.idle - from.idle
  return total > 0 ? active / total : 1
}

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
  /** Requests counted per whole second of real time: the second being counted, its count, the last full ones. */
  private second = { index: -Infinity, count: 0 }
  private readonly seconds: number[] = []
  /**
   * Slowing was found not to help this burst's clients, who then sent `base` requests a second (over the last
   * RATE_SECONDS): none until the burst ends or they send RATE_RISE times as many (`checked`: the last second read).
   */
  private declined: { base: number; checked: number } | undefined
  /** Since when, and from what loop time, the thread's busy share is read while slowing. */
  private window: { at: number; loop: LoopTime } | undefined

  constructor(
    private readonly now: () => number = () => performance.now(),
    private readonly loopTime: () => LoopTime = () => performance.eventLoopUtilization()
  ) {
    this.accountedAt = now()
  }

  /** An ingest request was accepted. */
  ingested(): void {
    const t = this.account()
    this.recent[this.next] = t
    this.next = (this.next + 1) % BURST_MIN_REQUESTS
    this.countSecond(t)
    this.second.count++
  }

  /** Whether `lane` may lease now; when it may, the lease is counted from now. */
  mayLease(lane: string): boolean {
    const t = this.account()
    // The oldest of the last BURST_MIN_REQUESTS requests is recent: requests are arriving fast.
    const burst = t - (this.recent[this.next] as number) <= BURST_IDLE_MS
    if (!burst || this.rateRose(t)) this.declined = undefined
    this.slowing = !this.spent && burst && this.declined === undefined && this.stillUseful(t)
    if (this.slowing && t - (this.lastLease.get(lane) ?? -Infinity) < BURST_LEASE_GAP_MS) return false
    this.lastLease.set(lane, t)
    return true
  }

  /**
   * Whether slowing, wanted now, still serves clients: false once a full window of it left the thread idle more than
   * USEFUL_MIN_BUSY allows (then it is declined until the burst ends or the clients' rate rises: see mayLease).
   */
  private stillUseful(t: number): boolean {
    if (this.window === undefined || !this.slowing) {
      this.window = { at: t, loop: this.loopTime() }
      return true
    }
    if (t - this.window.at < USEFUL_WINDOW_MS) return true
    const loop = this.loopTime()
    const useful = busyShare(this.window.loop, loop) >= USEFUL_MIN_BUSY
    if (!useful) this.declined = { base: this.rate(t), checked: this.second.index }
    this.window = { at: t, loop }
    return useful
  }

  /** While slowing is declined: whether requests now arrive RATE_RISE times faster than when it was (each second). */
  private rateRose(t: number): boolean {
    const declined = this.declined
    if (declined === undefined) return false
    const rate = this.rate(t)
    if (this.second.index === declined.checked) return false
    declined.checked = this.second.index
    return rate > declined.base * RATE_RISE
  }

  /** Requests a second over the last RATE_SECONDS whole seconds before `t` (fewer at the start). */
  private rate(t: number): number {
    this.countSecond(t)
    const n = this.seconds.length
    return n === 0 ? this.second.count : this.seconds.reduce((a, b) => a + b, 0) / n
  }

  /** Moves the count on to the second of `t`, keeping the last RATE_SECONDS full ones (empty ones included). */
  private countSecond(t: number): void {
    const index = Math.floor(t / 1_000)
    if (index === this.second.index) return
    if (Number.isFinite(this.second.index)) {
      this.seconds.push(this.second.count)
      // Seconds without a request count as 0 (at most RATE_SECONDS of them matter).
      const empty = Math.min(index - this.second.index - 1, RATE_SECONDS)
      for (let i = 0; i < empty; i++) this.seconds.push(0)
      this.seconds.splice(0, Math.max(0, this.seconds.length - RATE_SECONDS))
    }
    this.second = { index, count: 0 }
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
