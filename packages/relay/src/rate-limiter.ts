/** A clock the relay reads and sleeps on; tests may drive it. */
export interface Clock {
  now(): number
  sleep(ms: number): Promise<void>
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))
}

/**
 * Requests per second to one 1Flow project, never more than the current limit in any one-second window
 * (a sliding window of send times, so bursts cannot exceed it either). The window is 1,050 ms, so that
 * requests bunching up by up to 50 ms on the way still arrive at 1Flow within the limit.
 * AIMD: a 429 cuts the limit by 30%; two clean seconds in a row raise it by 10%, back up to the maximum.
 */
export class RateLimiter {
  private readonly sent: number[] = []
  private limit: number
  private cleanSince: number

  constructor(
    private readonly max: number,
    private readonly clock: Clock,
    private readonly windowMs = 1050
  ) {
    this.limit = max
    this.cleanSince = clock.now()
  }

  get current(): number {
    return this.limit
  }

  /** Takes a send slot, waiting until one is free. */
  async acquire(): Promise<void> {
    for (;;) {
      const now = this.clock.now()
      this.recover(now)
      while (this.sent.length > 0 && (this.sent[0] as number) <= now - this.windowMs) this.sent.shift()
      if (this.sent.length < Math.floor(this.limit)) {
        this.sent.push(now)
        return
      }
      await this.clock.sleep((this.sent[0] as number) + this.windowMs - now + 1)
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
