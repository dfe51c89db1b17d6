import { describe, expect, it } from 'vitest'
import { loadOneFlowSdk, SdkLoadError, toSdkClient, type SdkLoaderDeps } from '../index'
import { recordingClient } from './recording-client'

// A manual clock: timers fire only when the test advances time, so no test sleeps.
// Like a page's own timer functions, these refuse to be called as methods of another object.
function manualClock() {
  let now = 0
  let seq = 0
  const timers = new Map<number, { at: number; fn: () => void }>()
  return {
    setTimeout: function (this: unknown, fn: () => void, ms: number) {
      if (this !== undefined) throw new TypeError('Illegal invocation')
      timers.set(++seq, { at: now + ms, fn })
      return seq
    },
    clearTimeout: function (this: unknown, handle: unknown) {
      if (this !== undefined) throw new TypeError('Illegal invocation')
      timers.delete(handle as number)
    },
    async advance(ms: number) {
      const end = now + ms
      for (;;) {
        const next = [...timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0]
        if (!next) break
        timers.delete(next[0])
        now = next[1].at
        next[1].fn()
        await Promise.resolve()
      }
      now = end
      await new Promise((r) => setImmediate(r))
    },
    get pending() {
      return timers.size
    }
  }
}

const settings = { sdkUrl: 'https://1flow.app/js/1flow.js', projectApiKey: 'key-1' }

function deps(overrides: Partial<SdkLoaderDeps> & { global?: { value: unknown } }) {
  const clock = manualClock()
  const global = overrides.global ?? { value: undefined }
  const loads: Array<[string, Record<string, string>]> = []
  const d: SdkLoaderDeps = {
    loadScript: async (src, attrs) => {
      loads.push([src, attrs])
    },
    readGlobal: () => global.value,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    ...overrides
  }
  return { d, clock, global, loads }
}

describe('loadOneFlowSdk', () => {
  it('uses an SDK already on the page without injecting a script', async () => {
    const calls: unknown[] = []
    const { d, loads, clock } = deps({
      global: { value: { logUser: (...a: unknown[]) => calls.push(a), logEvent: () => undefined } }
    })
    const client = await loadOneFlowSdk(settings, d, { timeoutMs: 10_000 })
    client.send({ kind: 'identify', userId: 'u', traits: {} })
    expect(loads).toEqual([])
    expect(calls).toEqual([['u', {}]])
    expect(clock.pending).toBe(0)
  })

  it('loads the script with data-api-key, then waits for the real SDK to appear', async () => {
    const { d, clock, global, loads } = deps({})
    let client: unknown
    void loadOneFlowSdk(settings, d, { timeoutMs: 10_000 }).then((c) => (client = c))
    await clock.advance(100)
    expect(loads).toEqual([['https://1flow.app/js/1flow.js', { 'data-api-key': 'key-1' }]])
    expect(client).toBeUndefined()
    global.value = { logUser: () => undefined, logEvent: () => undefined }
    await clock.advance(25)
    expect(client).toEqual({
      send: expect.any(Function),
      knownUser: expect.any(Function),
      forget: expect.any(Function)
    })
    expect(clock.pending).toBe(0)
  })

  it('rejects with an error naming the URL when the script fails (404, blocked, CSP), leaving no timer', async () => {
    const { d, clock } = deps({ loadScript: () => Promise.reject(new Error('Failed to load')) })
    const error = await loadOneFlowSdk(settings, d, { timeoutMs: 10_000 }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(SdkLoadError)
    expect((error as Error).message).toContain('https://1flow.app/js/1flow.js')
    expect((error as Error).message).not.toContain('key-1')
    expect(clock.pending).toBe(0)
  })

  it('rejects at the deadline when the script never answers, leaving no timer', async () => {
    const { d, clock } = deps({ loadScript: () => new Promise(() => undefined) })
    let error: unknown
    void loadOneFlowSdk(settings, d, { timeoutMs: 1500 }).catch((e: unknown) => (error = e))
    await clock.advance(1499)
    expect(error).toBeUndefined()
    await clock.advance(1)
    expect(error).toMatchObject({ code: 'SDK_LOAD_FAILED', url: settings.sdkUrl })
    expect(clock.pending).toBe(0)
  })

  it('rejects at the deadline when the script loads but never defines the SDK, and stops polling', async () => {
    const { d, clock } = deps({})
    let error: unknown
    void loadOneFlowSdk(settings, d, { timeoutMs: 300 }).catch((e: unknown) => (error = e))
    await clock.advance(300)
    expect(error).toBeInstanceOf(SdkLoadError)
    expect(clock.pending).toBe(0)
  })
})

describe('toSdkClient', () => {
  it('prefers methods when the global has them, even on a function', () => {
    const calls: unknown[] = []
    const fn = Object.assign((...a: unknown[]) => calls.push(['fn', ...a]), {
      logUser: (...a: unknown[]) => calls.push(['logUser', ...a]),
      logEvent: (...a: unknown[]) => calls.push(['logEvent', ...a])
    })
    const client = toSdkClient(fn)!
    client.send({ kind: 'track', event: 'E', properties: { a: 1 }, userId: 'u' })
    expect(calls).toEqual([
      ['logUser', 'u'],
      ['logEvent', 'E', { a: 1 }]
    ])
  })

  it("gives a track's user first whenever it is not the user given last (A, B, then A's track), in either shape", () => {
    const { client, calls: methods } = recordingClient()
    client.send({ kind: 'identify', userId: 'A', traits: { plan: 'pro' } })
    client.send({ kind: 'identify', userId: 'B', traits: {} })
    client.send({ kind: 'track', event: 'By A', properties: {}, userId: 'A' })
    client.send({ kind: 'track', event: 'By A again', properties: {}, userId: 'A' })
    client.send({ kind: 'track', event: 'By B', properties: {}, userId: 'B' })
    expect(methods).toEqual([
      ['logUser', 'A', { plan: 'pro' }],
      ['logUser', 'B', {}],
      ['logUser', 'A'],
      ['logEvent', 'By A', {}],
      ['logEvent', 'By A again', {}],
      ['logUser', 'B'],
      ['logEvent', 'By B', {}]
    ])
    const dispatched: unknown[] = []
    const byFunction = toSdkClient((...a: unknown[]) => dispatched.push(a))!
    byFunction.send({ kind: 'identify', userId: 'A', traits: {} })
    byFunction.send({ kind: 'identify', userId: 'B', traits: {} })
    byFunction.send({ kind: 'track', event: 'By A', properties: {}, userId: 'A' })
    expect(dispatched.map((d) => (d as unknown[]).slice(0, 2))).toEqual([
      ['identify', 'A'],
      ['identify', 'B'],
      ['identify', 'A'],
      ['track', 'By A']
    ])
  })

  it('hands the user known at load to the SDK once, with its traits; forget() (analytics.reset) gives the next user again', () => {
    const { client, calls } = recordingClient()
    client.knownUser('A', { email: 'a@example.com' })
    client.knownUser('A', { email: 'a@example.com' })
    client.send({ kind: 'track', event: 'E1', properties: {}, userId: 'A' })
    client.forget()
    client.send({ kind: 'track', event: 'E2', properties: {}, userId: 'A' })
    client.knownUser('C', {})
    expect(calls).toEqual([
      ['logUser', 'A', { email: 'a@example.com' }],
      ['logEvent', 'E1', {}],
      ['logUser', 'A'],
      ['logEvent', 'E2', {}],
      ['logUser', 'C']
    ])
  })

  it("introduces a track's user to the SDK once, unless an identify did, in either SDK shape", () => {
    const { client: byMethods, calls: methods } = recordingClient()
    byMethods.send({ kind: 'identify', userId: 'a', traits: {} })
    byMethods.send({ kind: 'track', event: 'E1', properties: {}, userId: 'a' })
    byMethods.send({ kind: 'track', event: 'E2', properties: {}, userId: 'b' })
    byMethods.send({ kind: 'track', event: 'E3', properties: {}, userId: 'b' })
    byMethods.send({ kind: 'track', event: 'E4', properties: {}, anonymousId: 'anon' })
    expect(methods).toEqual([
      ['logUser', 'a', {}],
      ['logEvent', 'E1', {}],
      ['logUser', 'b'],
      ['logEvent', 'E2', {}],
      ['logEvent', 'E3', {}],
      ['logEvent', 'E4', {}]
    ])
    const dispatched: unknown[] = []
    const byFunction = toSdkClient((...a: unknown[]) => dispatched.push(a))!
    byFunction.send({ kind: 'track', event: 'E', properties: {}, userId: 'c' })
    expect(dispatched).toEqual([
      ['identify', 'c', {}],
      ['track', 'E', { userId: 'c', anonymousId: undefined, properties: {} }]
    ])
  })

  it('calls the function form as Segment reference does', () => {
    const calls: unknown[] = []
    const client = toSdkClient((...a: unknown[]) => calls.push(a))!
    client.send({ kind: 'identify', userId: 'u', traits: { plan: 'pro' } })
    client.send({ kind: 'track', event: 'E', properties: { a: 1 }, anonymousId: 'an' })
    expect(calls).toEqual([
      ['identify', 'u', { plan: 'pro' }],
      ['track', 'E', { userId: undefined, anonymousId: 'an', properties: { a: 1 } }]
    ])
  })

  it('is undefined for anything that is not an SDK', () => {
    for (const v of [undefined, null, 1, 'x', {}, { logUser() {} }]) expect(toSdkClient(v)).toBeUndefined()
  })
})
