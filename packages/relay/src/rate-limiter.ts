/** A clock the relay reads and sleeps on; tests may drive it. */
export interface Clock {
  now(): number
  sleep(ms: number): Promise<void>
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))
}

/** Paces requests to one 1Flow project; the PostgreSQL queue provides one shared by every relay instance. */
export interface SendLimiter {
  /** Takes a send slot, waiting until one is free; call the returned function once the answer has come. */
  acquire(): Promise<() => void>
  /** 1Flow said 429: slow down. */
  throttled(): void
  /** The current requests/s limit. */
  readonly current: number
}

/**
 * Requests per second to one 1Flow project, never more than the current limit in any one-second window as
 * 1Flow would count them. A request may arrive any time between being sent and being answered, so it
 * counts against the window from the moment it is sent until one second after its answer.
 * AIMD: a 429 cuts the limit by 30%; two clean seconds in a row raise it by 10%, back up to the maximum.
 */
export class RateLimiter implements SendLimiter {
  /** One entry per request: when it ended (Infinity while in flight). */
  private readonly requests: Array<{ end: number }> = []
  private limit: number
  private cleanSince: number

  constructor(
    private readonly max: number,
    private readonly clock: Clock,
    private readonly windowMs = 1000
  ) {
    this.limit = max
    this.cleanSince = clock.now()
  }

  get current(): number {
    return this.limit
  }

  /** Takes a send slot, waiting until one is free; call the returned function once the answer has come. */
  async acquire(): Promise<() => void> {
    for (;;) {
      const now = this.clock.now()
      this.recover(now)
      for (let i = this.requests.length - 1; i >= 0; i--) if ((this.requests[i] as { end: number }).end <= now - this.windowMs) this.requests.splice(i, 1)
      if (this.requests.length < Math.floor(this.limit)) {
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

  /** 1Flow said 429: cut the limit by 30% (never below 1 request/s). */
  throttled(): void {
    this.limit = Math.max(1, this.limit * 0.7)
    this.cleanSince = this.clock.now()
  }

  private recover(now: number): void {
    if (this.limit >= this.max || now - this.cleanSince < 2000) return
    this.limit = Math.min(this.max, this.limit * 1.1)
    this.cleanSince = now
  }
}
