import { describe, expect, it } from 'vitest'
import { RateLimiter, type Clock } from '../rate-limiter'

// A clock that only moves when the limiter sleeps: the test sees exactly when each slot was granted.
function steppingClock(): Clock & { t: number } {
  const clock = {
    t: 0,
    now: () => clock.t,
    sleep: async (ms: number) => {
      clock.t += ms
    }
  }
  return clock
}

describe('RateLimiter', () => {
  it('grants at most `limit` requests in any one-second window, counting each until its answer', async () => {
    const clock = steppingClock()
    const limiter = new RateLimiter(5, clock)
    const granted: number[] = []
    for (let i = 0; i < 12; i++) {
      const done = await limiter.acquire()
      granted.push(clock.t)
      clock.t += 10
      done()
    }
    for (const t of granted) expect(granted.filter((g) => g > t - 1000 && g <= t).length).toBeLessThanOrEqual(5)
    expect(granted.slice(0, 5)).toEqual([0, 10, 20, 30, 40])
    expect(granted[5]).toBeGreaterThanOrEqual(1010)
  })

  it('keeps a request that is still in flight in the window, however long it takes', async () => {
    const clock = steppingClock()
    const limiter = new RateLimiter(1, clock)
    const done = await limiter.acquire()
    clock.t = 5_000
    const next = limiter.acquire()
    let granted = false
    void next.then(() => (granted = true))
    await Promise.resolve()
    expect(granted).toBe(false)
    done()
    await next
    expect(clock.t).toBeGreaterThanOrEqual(6_000)
  })

  it('cuts the limit by 30% on a 429 and recovers by 10% after two clean seconds', async () => {
    const clock = steppingClock()
    const limiter = new RateLimiter(100, clock)
    limiter.throttled()
    expect(limiter.current).toBeCloseTo(70)
    limiter.throttled()
    expect(limiter.current).toBeCloseTo(49)
    clock.t += 2_000
    ;(await limiter.acquire())()
    expect(limiter.current).toBeCloseTo(53.9)
    for (let i = 0; i < 20; i++) {
      clock.t += 2_000
      ;(await limiter.acquire())()
    }
    expect(limiter.current).toBe(100)
    for (let i = 0; i < 50; i++) limiter.throttled()
    expect(limiter.current).toBe(1)
  })
})
