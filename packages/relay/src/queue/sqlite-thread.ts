/**
 * The SQLite queue on its own thread. better-sqlite3 is synchronous: on the main thread every commit's fsync
 * (synchronous=FULL), every insert and every lease stops the event loop, so no request is read or answered
 * meanwhile. Here a worker thread owns the database (the same `SqliteQueue`, same file, same guarantees) and the
 * main thread only parses, validates and answers; the two overlap, and group commit gets bigger groups because
 * requests keep arriving while a commit is on disk. See docs/relay-ingest.md.
 *
 * If the worker dies (a native fault), the calls in flight fail — ingest answers 503, nothing acknowledged is
 * lost, since it was committed — and the next call starts a new worker on the same file.
 */
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { DeadLetter, DeadLetterInfo, EnqueueResult, Job, PruneResult, Queue, QueueStats, Selection } from './queue'
import { UnstorableEventsError, type NewEvent } from './queue'
import type { SqliteQueueOptions } from './sqlite-queue'

/** The queue methods the worker serves (everything but the optional shared limiter). */
export type QueueMethod = Exclude<keyof Queue, 'sharedLimiter'>

export interface Call {
  readonly id: number
  readonly method: QueueMethod
  readonly args: unknown[]
}

/** An error, as it crosses the thread boundary (Error objects lose their `code` and class on the way). */
export interface WireError {
  readonly message: string
  readonly name: string
  readonly code?: string
  /** The worker refused what one request holds (UnstorableEventsError): answered 400, not 503. */
  readonly unstorable?: boolean
}

export type Reply =
  { readonly id: number; readonly result: unknown } | { readonly id: number; readonly error: WireError }

export interface WorkerInput {
  readonly path: string
  readonly options: SqliteQueueOptions
}

/** The queue's thread is missing, failed or exited: the relay answers 503 and starts a new one on the next call. */
export class QueueThreadError extends Error {
  override readonly name = 'QueueThreadError'
  readonly code = 'QUEUE_THREAD'
}

export function toWire(error: unknown): WireError {
  if (error instanceof UnstorableEventsError) {
    const cause = error.cause as { message?: string; code?: string } | undefined
    return {
      name: error.name,
      message: String(cause?.message ?? error.message),
      ...(cause?.code !== undefined && { code: String(cause.code) }),
      unstorable: true
    }
  }
  const e = error instanceof Error ? error : new Error(String(error))
  const code = (e as { code?: unknown }).code
  return { name: e.name, message: e.message, ...(code !== undefined && { code: String(code) }) }
}

function fromWire(wire: WireError): Error {
  const error = Object.assign(new Error(wire.message), wire.code !== undefined ? { code: wire.code } : {})
  if (wire.unstorable) return new UnstorableEventsError(error)
  error.name = wire.name
  return error
}

/** The worker's built file: next to this module in dist/, or in dist/ when running from src/ (tests). */
function workerFile(): string {
  const here = typeof __dirname === 'string' ? __dirname : dirname(fileURLToPath(import.meta.url))
  const candidates = [join(here, 'sqlite-worker.cjs'), join(here, '..', '..', 'dist', 'sqlite-worker.cjs')]
  const found = candidates.find((f) => existsSync(f))
  if (!found)
    throw new QueueThreadError(
      `the SQLite queue's worker is missing (looked for ${candidates.join(', ')}); rebuild the package`
    )
  return found
}

export class ThreadedSqliteQueue implements Queue {
  private worker: Worker | undefined
  private readonly pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>()
  private nextId = 1
  private closed = false

  private constructor(
    readonly path: string,
    private readonly options: SqliteQueueOptions
  ) {}

  /** Opens the file on a worker thread; rejects (with the worker's error) when the file cannot be opened. */
  static async open(path: string, options: SqliteQueueOptions = {}): Promise<ThreadedSqliteQueue> {
    const queue = new ThreadedSqliteQueue(path, options)
    await queue.call('checkWritable', [])
    return queue
  }

  private start(): Worker {
    const workerData: WorkerInput = { path: this.path, options: this.options }
    const worker = new Worker(workerFile(), { workerData })
    worker.on('message', (reply: Reply) => {
      const waiter = this.pending.get(reply.id)
      if (!waiter) return
      this.pending.delete(reply.id)
      if (this.pending.size === 0) worker.unref()
      if ('error' in reply) waiter.reject(fromWire(reply.error))
      else waiter.resolve(reply.result)
    })
    const gone = (error: Error) => {
      if (this.worker !== worker) return
      this.worker = undefined
      for (const waiter of this.pending.values()) waiter.reject(error)
      this.pending.clear()
    }
    worker.on('error', (error) => gone(new QueueThreadError(`the SQLite queue's thread failed: ${error.message}`)))
    worker.on('exit', (code) => gone(new QueueThreadError(`the SQLite queue's thread exited (code ${code})`)))
    // The worker keeps the process alive only while a call waits for it (see call()).
    worker.unref()
    this.worker = worker
    return worker
  }

  private call<T>(method: QueueMethod, args: unknown[]): Promise<T> {
    if (this.closed) return Promise.reject(new QueueThreadError('the queue is closed'))
    const worker = this.worker ?? this.start()
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      if (this.pending.size === 0) worker.ref()
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject })
      worker.postMessage({ id, method, args } satisfies Call)
    })
  }

  enqueue(events: readonly NewEvent[]): Promise<EnqueueResult> {
    return this.call('enqueue', [events])
  }
  lease(projectId: string, limit: number, leaseMs: number, now: number): Promise<Job[]> {
    return this.call('lease', [projectId, limit, leaseMs, now])
  }
  complete(ids: readonly number[]): Promise<void> {
    return this.call('complete', [ids])
  }
  release(ids: readonly number[], readyAt: number): Promise<void> {
    return this.call('release', [ids, readyAt])
  }
  retry(ids: readonly number[], nextAttemptAt: number, error: string, now: number): Promise<void> {
    return this.call('retry', [ids, nextAttemptAt, error, now])
  }
  deadLetter(ids: readonly number[], info: DeadLetterInfo, now: number): Promise<void> {
    return this.call('deadLetter', [ids, info, now])
  }
  recoverLeases(now: number): Promise<number> {
    return this.call('recoverLeases', [now])
  }
  pruneDedup(before: number): Promise<number> {
    return this.call('pruneDedup', [before])
  }
  stats(now: number): Promise<QueueStats> {
    return this.call('stats', [now])
  }
  liveBytes(): Promise<number> {
    return this.call('liveBytes', [])
  }
  pruneDead(deadBefore: number, maxBytes: number): Promise<PruneResult> {
    return this.call('pruneDead', [deadBefore, maxBytes])
  }
  compact(): Promise<void> {
    return this.call('compact', [])
  }
  listDead(options?: { limit?: number; sourceName?: string }): Promise<DeadLetter[]> {
    return this.call('listDead', [options])
  }
  replayDead(selection: Selection, now: number): Promise<number> {
    return this.call('replayDead', [selection, now])
  }
  purgeDead(selection: Selection): Promise<number> {
    return this.call('purgeDead', [selection])
  }
  checkWritable(): Promise<void> {
    return this.call('checkWritable', [])
  }

  async close(): Promise<void> {
    if (this.closed) return
    const worker = this.worker
    if (worker) {
      // The worker commits what waits, closes the database and exits.
      const exited = new Promise((resolve) => worker.once('exit', resolve))
      await this.call('close', []).catch(() => undefined)
      await exited
    }
    this.closed = true
  }
}
