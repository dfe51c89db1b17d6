/**
 * A queue that is opened in the background: the relay starts (and answers 503, logged once) while its database
 * cannot be reached yet — a PostgreSQL that starts after the relay, as in a compose file or after a reboot — and
 * opens it with backoff until it answers. A database that is not up is a fault the relay waits out, never a
 * reason to exit.
 */
import { OneFlowError } from '@oneflow-seg/core'
import { RateLimiter, type Clock, type SendLimiter } from '../rate-limiter'
import type { Queue } from './queue'

/** The queue cannot be used yet (it is still being opened) or any more (it is closed). */
export class QueueUnavailableError extends OneFlowError {
  override readonly name = 'QueueUnavailableError'
  readonly code = 'QUEUE_UNAVAILABLE'
  readonly remedy = 'retry'
}

/** Backoff between attempts to open: doubling from 1 s, at most 30 s, with jitter. */
export const OPEN_BACKOFF = { firstMs: 1_000, maxMs: 30_000 } as const

export interface DeferredQueueOptions {
  /** Opens the real queue (connects, migrates); rejects while the database cannot be reached. */
  readonly open: () => Promise<Queue>
  /** An attempt failed (called for each; the caller logs once per state change). */
  readonly onOpenFailed: (error: unknown) => void
  readonly sleep?: (ms: number) => Promise<void>
  readonly random?: () => number
}

type QueueMethod = Exclude<keyof Queue, 'sharedLimiter' | 'spaceProblem' | 'deliveryHeldBack' | 'pauseLane'>

export class DeferredQueue implements Queue {
  private queue: Queue | undefined
  private lastError: unknown
  private closed = false
  /** Settles once the queue is open (or the wrapper closed first). */
  readonly opened: Promise<void>

  constructor(private readonly options: DeferredQueueOptions) {
    this.opened = this.openLoop()
  }

  private async openLoop(): Promise<void> {
    const sleep = this.options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref()))
    const random = this.options.random ?? Math.random
    let wait: number = OPEN_BACKOFF.firstMs
    while (!this.closed) {
      try {
        const queue = await this.options.open()
        if (this.closed) await queue.close()
        else this.queue = queue
        return
      } catch (error) {
        this.lastError = error
        this.options.onOpenFailed(error)
      }
      await sleep(wait / 2 + random() * (wait / 2))
      wait = Math.min(OPEN_BACKOFF.maxMs, wait * 2)
    }
  }

  /** The open queue, or a QueueUnavailableError saying why there is none yet. */
  private current(): Queue {
    if (this.queue) return this.queue
    const why = this.lastError instanceof Error ? `: ${this.lastError.message}` : ''
    throw new QueueUnavailableError(
      this.closed ? 'the queue is closed' : `the queue cannot be reached yet${why}; the relay keeps trying`
    )
  }

  private call<M extends QueueMethod>(method: M, ...args: Parameters<Queue[M]>): ReturnType<Queue[M]> {
    const queue = this.current()
    return (queue[method] as (...a: Parameters<Queue[M]>) => ReturnType<Queue[M]>).apply(queue, args)
  }

  enqueue: Queue['enqueue'] = async (...a) => this.call('enqueue', ...a)
  lease: Queue['lease'] = async (...a) => this.call('lease', ...a)
  renew: Queue['renew'] = async (...a) => this.call('renew', ...a)
  complete: Queue['complete'] = async (...a) => this.call('complete', ...a)
  release: Queue['release'] = async (...a) => this.call('release', ...a)
  retry: Queue['retry'] = async (...a) => this.call('retry', ...a)
  deadLetter: Queue['deadLetter'] = async (...a) => this.call('deadLetter', ...a)
  recoverLeases: Queue['recoverLeases'] = async (...a) => this.call('recoverLeases', ...a)
  pruneDedup: Queue['pruneDedup'] = async (...a) => this.call('pruneDedup', ...a)
  stats: Queue['stats'] = async (...a) => this.call('stats', ...a)
  liveBytes: Queue['liveBytes'] = async () => this.call('liveBytes')
  pruneDead: Queue['pruneDead'] = async (...a) => this.call('pruneDead', ...a)
  compact: Queue['compact'] = async () => this.call('compact')
  listDead: Queue['listDead'] = async (...a) => this.call('listDead', ...a)
  replayDead: Queue['replayDead'] = async (...a) => this.call('replayDead', ...a)
  purgeDead: Queue['purgeDead'] = async (...a) => this.call('purgeDead', ...a)
  checkWritable: Queue['checkWritable'] = async () => this.call('checkWritable')

  deliveryHeldBack(): string | undefined {
    return this.queue?.deliveryHeldBack?.()
  }

  /** Kept by the real queue once it is open (nothing was leased before, so nothing was sent to pause). */
  async pauseLane(lane: string, until: number): Promise<void> {
    await this.queue?.pauseLane?.(lane, until)
  }

  /** The real queue's shared limiter, made on first use once the queue is open (a local one if it has none). */
  sharedLimiter(
    projectId: string,
    maxPerSecond: number,
    options: { readonly inFlightMs: number; readonly clock: Clock }
  ): SendLimiter {
    let limiter: SendLimiter | undefined
    const get = () => {
      const queue = this.current()
      limiter ??=
        queue.sharedLimiter?.(projectId, maxPerSecond, options) ?? new RateLimiter(maxPerSecond, options.clock)
      return limiter
    }
    return {
      acquire: async () => get().acquire(),
      throttled: () => {
        if (this.queue) get().throttled()
      },
      get current() {
        return limiter?.current ?? maxPerSecond
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true
    await this.queue?.close()
    this.queue = undefined
  }
}
