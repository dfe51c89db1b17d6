/**
 * Buckets of a project's users (PostgreSQL; docs/relay-queue.md, "Buckets: several owners per project"). A project's
 * events are spread over a fixed number of buckets by a hash of their user's ordering key, and each bucket is a lane
 * of its own (`<project>#<bucket>`): its own inbox rows, owner, epoch and lane lock. A user is always in the same
 * bucket, so its events keep their order; several relays drain one project by owning different buckets. With one
 * bucket the lane is the project itself (databases upgraded from before buckets).
 */
import { OneFlowError } from '@oneflow-seg/core'

/** How many buckets a PostgreSQL queue created by this version spreads each project over. */
export const DEFAULT_BUCKETS = 8

/** The most buckets a queue may have (a lease of a project looks at each bucket this relay owns). */
export const MAX_BUCKETS = 64

/** Between a project's id and its bucket in a lane's name: never in a project id (hex, or `segment-` and hex). */
const MARK = '#'

/** A user's bucket among `n`: FNV-1a over the ordering key's UTF-16 code units (stable across versions). */
export function bucketOf(userKey: string, n: number): number {
  let h = 0x811c9dc5
  for (let i = 0; i < userKey.length; i++) h = Math.imul(h ^ userKey.charCodeAt(i), 0x01000193)
  return (h >>> 0) % n
}

/** The lane of a user's events in `projectId` when projects are spread over `n` buckets. */
export function laneOf(projectId: string, userKey: string, n: number): string {
  return n <= 1 ? projectId : `${projectId}${MARK}${bucketOf(userKey, n)}`
}

/** Every lane of `projectId` with `n` buckets, in bucket order. */
export function lanesOf(projectId: string, n: number): string[] {
  return n <= 1 ? [projectId] : Array.from({ length: n }, (_, b) => `${projectId}${MARK}${b}`)
}

/** The project a lane belongs to (the lane itself without buckets). */
export function projectOf(lane: string): string {
  const at = lane.indexOf(MARK)
  return at < 0 ? lane : lane.slice(0, at)
}

/** relay_settings holds a bucket count this relay cannot use (someone edited it). */
export class BucketsSettingError extends OneFlowError {
  override readonly name = 'BucketsSettingError'
  readonly code = 'QUEUE_BUCKETS_INVALID'
  readonly remedy = 'fix-config'
  constructor(value: unknown) {
    super(
      `the PostgreSQL queue's relay_settings holds buckets = ${JSON.stringify(value)}, not a whole number from 1 to ${MAX_BUCKETS}; no relay can deliver from it until it is set back to the value the queue was created with (its events are in lanes named <project>#<bucket>)`
    )
  }
}
