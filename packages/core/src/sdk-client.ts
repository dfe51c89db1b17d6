/**
 * The 1Flow web SDK as both browser adapters see it, without touching the DOM: the adapters inject
 * `loadScript`, a reader for `window._1flow` and the timer functions. Works with either SDK shape —
 * 1Flow's documented object (`_1flow.logUser` / `_1flow.logEvent`, preferred when present) and the
 * function Segment's reference calls (`_1flow('identify' | 'track', …)`).
 */
import type { Command } from './commands.js'
import type { JsonObject } from './json-value.js'
import { OneFlowError } from './errors.js'
import { toSdkCall } from './sdk-call.js'

/** 1Flow's documented SDK object. */
export interface OneFlowSdkObject {
  logUser(userId: string, userDetails?: object): void
  logEvent(eventName: string, params?: object): void
}

/** The dispatch function Segment's reference destination calls. */
export type OneFlowSdkFunction = (method: 'identify' | 'track', ...args: unknown[]) => void

/** A ready SDK: `send` reaches it synchronously. */
export interface SdkClient {
  send(cmd: Command): void
  /**
   * The user Analytics.js already knows when the page loads (from an earlier page): given to the SDK, with the
   * traits Analytics.js keeps, before any event, so page-visit surveys and 1Flow's own events are not anonymous.
   */
  knownUser(userId: string, traits?: JsonObject): void
  /** `analytics.reset()` (a logout): the user given last is forgotten, so the next identified event is given again. */
  forget(): void
}

/**
 * A client for whatever `window._1flow` holds, or undefined when it is not (yet) a usable SDK.
 *
 * 1Flow's SDK credits an event to the user it was given last. So the client remembers that user (one, not every
 * user ever given) and gives an event's own user first whenever it differs: a track whose User ID is not the user
 * given last is preceded by `logUser(userId)` (no traits) — after a user switch (A, B, then A's track), and on a
 * page where the user came from an earlier page. The anonymous ID is not passed: the SDK keeps its own anonymous
 * visitor id and has no call that takes one (docs/oneflow-api.md).
 */
export function toSdkClient(candidate: unknown): SdkClient | undefined {
  if (candidate === null || (typeof candidate !== 'object' && typeof candidate !== 'function')) return undefined
  const sdk = candidate as Partial<OneFlowSdkObject>
  let call: (cmd: Command) => void
  let give: (userId: string, traits: JsonObject | undefined) => void
  if (typeof sdk.logUser === 'function' && typeof sdk.logEvent === 'function') {
    const methods = sdk as OneFlowSdkObject
    call = (cmd) => {
      const [method, first, second] = toSdkCall(cmd)
      methods[method](first, second)
    }
    give = (userId, traits) => (traits ? methods.logUser(userId, traits) : methods.logUser(userId))
  } else if (typeof candidate === 'function') {
    const dispatch = candidate as OneFlowSdkFunction
    call = (cmd) => {
      if (cmd.kind === 'identify') dispatch('identify', cmd.userId, cmd.traits)
      else
        dispatch('track', cmd.event, { userId: cmd.userId, anonymousId: cmd.anonymousId, properties: cmd.properties })
    }
    give = (userId, traits) => dispatch('identify', userId, traits ?? {})
  } else return undefined
  /** The user the SDK was given last (what it credits events to), or undefined. */
  let current: string | undefined
  return {
    send(cmd) {
      if (cmd.kind === 'identify') current = cmd.userId
      else if (cmd.userId !== undefined && cmd.userId !== current) {
        give(cmd.userId, undefined)
        current = cmd.userId
      }
      call(cmd)
    },
    knownUser(userId, traits) {
      if (userId === current) return
      give(userId, traits && Object.keys(traits).length > 0 ? traits : undefined)
      current = userId
    },
    forget() {
      current = undefined
    }
  }
}

/** The 1Flow web SDK could not be loaded (404, blocked, CSP, or no answer before the deadline). */
export class SdkLoadError extends OneFlowError {
  override readonly name = 'SdkLoadError'
  readonly code = 'SDK_LOAD_FAILED'
  readonly remedy = 'fix-config'
  constructor(
    readonly url: string,
    readonly reason: string
  ) {
    super(
      `The 1Flow SDK at ${url} did not load (${reason}); check the URL and the page's Content-Security-Policy (script-src).`
    )
  }
}

/** What loading needs from the runtime (a browser page, or a test double). */
export interface SdkLoaderDeps {
  /** Inserts `<script src async>` with the attributes; resolves on load, rejects on error (404, blocked, CSP). */
  loadScript(src: string, attributes: Record<string, string>): Promise<unknown>
  /** Reads `window._1flow`. */
  readGlobal(): unknown
  setTimeout(callback: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

/** The parts of a browser's global scope the SDK wiring reads (passed in: core touches no global itself). */
export interface BrowserScope {
  readonly _1flow?: unknown
  setTimeout(callback: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

/** The loader's dependencies from a page: its `window` and a script loader (the runtime's, or createScriptLoader's). */
export function browserSdkDeps(scope: BrowserScope, loadScript: SdkLoaderDeps['loadScript']): SdkLoaderDeps {
  return {
    loadScript,
    readGlobal: () => scope._1flow,
    // Called on the scope: a page's timers throw "Illegal invocation" when called with another `this`.
    setTimeout: (callback, ms) => scope.setTimeout(callback, ms),
    clearTimeout: (handle) => scope.clearTimeout(handle)
  }
}

export interface SdkLoadOptions {
  /**
   * Give up after this long: the resolved `loadTimeoutMs` setting (resolveSdkSettings applies its default,
   * DEFAULT_SDK_TIMEOUT_MS). Required, so that this module depends on nothing an adapter needs at start-up.
   */
  readonly timeoutMs: number
  /** How often to look for the SDK after its script has loaded (default 25 ms). */
  readonly pollMs?: number
}

/**
 * Loads 1Flow's SDK from `sdkUrl` with `data-api-key` and resolves once the real SDK is callable. An SDK
 * already on the page is used as it is (no second script). Rejects with SdkLoadError naming the URL on a
 * load error or at the deadline; no timer is left running either way.
 */
export function loadOneFlowSdk(
  settings: { readonly sdkUrl: string; readonly projectApiKey: string },
  deps: SdkLoaderDeps,
  options: SdkLoadOptions
): Promise<SdkClient> {
  // Called detached: a page's own setTimeout/clearTimeout throw "Illegal invocation" when called as methods of `deps`.
  const { loadScript, readGlobal, setTimeout: setTimer, clearTimeout: clearTimer } = deps
  const existing = toSdkClient(readGlobal())
  if (existing) return Promise.resolve(existing)
  const timeoutMs = options.timeoutMs
  const pollMs = options.pollMs ?? 25
  return new Promise<SdkClient>((resolve, reject) => {
    let settled = false
    let poll: unknown
    const finish = (error: SdkLoadError | undefined, client?: SdkClient) => {
      if (settled) return
      settled = true
      clearTimer(deadline)
      if (poll !== undefined) clearTimer(poll)
      if (error) reject(error)
      else resolve(client as SdkClient)
    }
    const deadline = setTimer(
      () => finish(new SdkLoadError(settings.sdkUrl, `no usable SDK within ${timeoutMs} ms`)),
      timeoutMs
    )
    const look = () => {
      poll = undefined
      if (settled) return
      const client = toSdkClient(readGlobal())
      if (client) finish(undefined, client)
      else poll = setTimer(look, pollMs)
    }
    loadScript(settings.sdkUrl, { 'data-api-key': settings.projectApiKey }).then(look, () =>
      finish(new SdkLoadError(settings.sdkUrl, 'the script failed: HTTP error, network failure or blocked'))
    )
  })
}
