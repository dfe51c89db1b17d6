/** A clock the relay reads and sleeps on; tests may drive it. */
export interface Clock {
  now(): number
  sleep(ms: number): Promise<void>
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))
}

/** Paces requests on one lane; the PostgreSQL queue provides one shared by every relay instance. */
export interface SendLimiter {
  /** Takes a send slot, waiting until one is free; call the returned function once the answer has come. */
  acquire(): Promise<() => void>
  /** The service said 429: slow down. */
  throttled(): void
  /** The current requests/s limit. */
  readonly current: number
}

/**
 * AIMD on a requests/s limit, shared by both limiters: a 429 cuts the limit by 30% (never below 1 request/s);
 * two clean seconds in a row raise it by 10%, back up to the maximum.
 */
export class AdaptiveLimit {
  private value: number
  private cleanSince: number

  constructor(
    private readonly max: number,
    now: number
  ) {
    this.value = max
    this.cleanSince = now
  }

  get current(): number {
    return this.value
  }

  /** The limit as of `now`, raised first if the last two seconds were clean. */
  at(now: number): number {
    if (this.value < this.max && now - this.cleanSince >= 2000) {
      this.value = Math.min(this.max, this.value * 1.1)
      this.cleanSince = now
    }
    return this.value
  }

  throttled(now: number): void {
    this.value = Math.max(1, this.value * 0.7)
    this.cleanSince = now
  }
}

/**
 * Requests per second to one lane (a 1Flow project or a Segment target), never more than the current limit
 * in any one-second window as the service would count them. A request may arrive any time between being
 * sent and being answered, so it counts against the window from the moment it is sent until one second
 * after its answer. The limit adapts (AdaptiveLimit).
 */
export class RateLimiter implements SendLimiter {
  /** One entry per request: when it ended (Infinity while in flight). */
  private readonly requests: Array<{ end: number }> = []
  private readonly limit: AdaptiveLimit

  constructor(
    max: number,
    private readonly clock: Clock,
    private readonly windowMs = 1000
  ) {
    this.limit = new AdaptiveLimit(max, clock.now())
  }

  get current(): number {
    return this.limit.current
  }

  /** Takes a send slot, waiting until one is free; call the returned function once the answer has come. */
  async acquire(): Promise<() => void> {
    for (;;) {
      const now = this.clock.now()
      const limit = this.limit.at(now)
      for (let i = this.requests.length - 1; i >= 0; i--)
        if ((this.requests[i] as { end: number }).end <= now - this.windowMs) this.requests.splice(i, 1)
      if (this.requests.length < Math.floor(limit)) {
        const entry = { end: Number.POSITIVE_INFINITY }
        this.requests.push(entry)
        return () => {
          entry.end = Math.min(entry.end, this.clock.now())
        }
      }
      const soonest = Math.min(...this.requests.map((r) => r.end))
      await this.clock.sleep(Number.isFinite(soonest) ? soonest + this.windowMs - now + 1 : 10)
    }
  }

  /** A 429: cut the limit by 30%. */
  throttled(): void {
    this.limit.throttled(this.clock.now())
  }
}
