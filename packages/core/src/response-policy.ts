/** What to do with a 1Flow response (the rules are written down in docs/delivery.md). */
export type Decision =
  | { readonly action: 'deliver' }
  | {
      readonly action: 'retry'
      /** From Retry-After (clamped to 300 s): send nothing to this project before then. */
      readonly afterMs?: number
      /** True for 429: the sender should also slow down (cut its rate). */
      readonly throttled: boolean
      /** Base delay for full-jitter backoff when there is no Retry-After. */
      readonly backoffBaseMs: number
      readonly reason: string
    }
  | { readonly action: 'split'; readonly reason: string }
  | { readonly action: 'dead-letter'; readonly reason: string }
  /**
   * Stop sending until someone fixes the setup, and probe now and then: the key is refused (`auth`), or the API
   * answered a redirect (`redirect`), which is never followed with the key and never counted as delivered.
   */
  | { readonly action: 'pause'; readonly cause: 'auth' | 'redirect'; readonly reason: string }

export interface ResponseFacts {
  /** HTTP status; undefined (or 0) for a network error or timeout. */
  readonly status?: number
  /** The Retry-After header, if any (seconds or an HTTP date). */
  readonly retryAfter?: string | null
  /** The Location header of a redirect, if any. */
  readonly location?: string | null
}

export const MAX_RETRY_AFTER_MS = 300_000

/** Parses Retry-After (delta-seconds or HTTP-date) into milliseconds from `now`, clamped to [0, 300 s]. */
export function parseRetryAfter(value: string | null | undefined, now: number): number | undefined {
  if (value === undefined || value === null) return undefined
  const text = value.trim()
  if (text === '') return undefined
  let ms: number
  if (/^\d+(\.\d+)?$/.test(text)) ms = Number(text) * 1000
  else {
    const at = Date.parse(text)
    if (!Number.isFinite(at)) return undefined
    ms = at - now
  }
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, Math.round(ms)))
}

/** Who answered, for the decision's reason: default 1Flow and its project API key. */
export interface ResponseParty {
  readonly service: string
  readonly credential: string
}

const ONEFLOW_PARTY: ResponseParty = { service: '1Flow', credential: 'the project API key' }

/** Where a redirect points, as an origin (never its user info, path or query, which may carry anything). */
function redirectTarget(location: string | null | undefined): string {
  if (!location) return 'no Location'
  const authority = /^(https?):\/\/([^/?#]+)/i.exec(location.trim())
  if (!authority) return 'to a relative path'
  // "user:pass@host" → "host": credentials in a Location header never reach a log or an alert.
  const host = (authority[2] as string).slice((authority[2] as string).lastIndexOf('@') + 1)
  return `to ${(authority[1] as string).toLowerCase()}://${host}`
}

/**
 * Classifies an HTTP answer into deliver / retry(after) / split / dead-letter / pause. The rules are
 * 1Flow's, and fit any ingestion API of the same kind (the relay uses them for Segment's API too, naming it).
 */
export function classifyResponse(
  res: ResponseFacts,
  now: number = Date.now(),
  party: ResponseParty = ONEFLOW_PARTY
): Decision {
  const { service, credential } = party
  const status = res.status ?? 0
  const afterMs = parseRetryAfter(res.retryAfter, now)
  const retry = (reason: string, throttled: boolean): Decision => ({
    action: 'retry',
    ...(afterMs !== undefined && { afterMs }),
    throttled,
    backoffBaseMs: throttled ? 1000 : 500,
    reason
  })
  if (status === 0) return retry('network error or timeout', false)
  if (status >= 200 && status < 300) return { action: 'deliver' }
  if (status === 401 || status === 403) {
    return {
      action: 'pause',
      cause: 'auth',
      reason: `${service} answered ${status}: ${credential} was refused; check or rotate it`
    }
  }
  // 1Flow answers a wrong project key with 404 (the project is not found): like a refused key, nothing about
  // the event is wrong, so the lane waits for the key to be fixed instead of dead-lettering every event.
  if (status === 404) {
    return {
      action: 'pause',
      cause: 'auth',
      reason: `${service} answered 404: nothing found for ${credential}; check that it is the right one (a wrong key answers 404) and that the API base URL is right`
    }
  }
  if (status >= 300 && status < 400) {
    return {
      action: 'pause',
      cause: 'redirect',
      reason: `${service} answered ${status} (a redirect ${redirectTarget(res.location)}); redirects are not followed with ${credential}: check the API base URL`
    }
  }
  if (status === 413) return { action: 'split', reason: `${service} answered 413: request too large` }
  if (status === 429) return retry(`${service} answered 429: rate limited`, true)
  if (status === 408) return retry(`${service} answered 408: request timeout`, false)
  if (status >= 500 && status !== 501 && status !== 505) return retry(`${service} answered ${status}`, false)
  return { action: 'dead-letter', reason: `${service} answered ${status}; retrying the same request would fail again` }
}

/**
 * Full-jitter backoff with a floor: a random delay between `baseMs` and min(cap, base·2^attempt).
 * `attempt` starts at 0. The floor keeps a retry storm from hammering 1Flow within the same millisecond.
 */
export function fullJitterDelay(attempt: number, random: () => number, baseMs = 500, capMs = 60_000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt))
  return Math.floor(baseMs + random() * Math.max(0, ceiling - baseMs))
}
