/**
 * Whether the queue (SQLite file, PostgreSQL database) takes writes, as one state every part of the relay
 * reports to and reads. A dependency fault never ends the process: while the queue fails, ingest and webhooks
 * answer 503 at once (without waiting on a database that does not answer), readiness is 503, one line is
 * logged when the state changes — not one per failed call — and a probe brings the relay back by itself.
 */
import type { Logger } from 'pino'
import type { Clock } from './rate-limiter'

/** How often a failing queue is probed with a real write. */
export const PROBE_EVERY_MS = 1_000

export class QueueHealth {
  private failure: { readonly since: number; readonly message: string } | undefined
  private probing = false

  constructor(
    private readonly logger: Logger,
    private readonly clock: Clock,
    /** A real, small write to the queue; resolves once the queue takes writes again. */
    private readonly probe: () => Promise<void>
  ) {}

  /** Why the queue is failing (for readiness and 503 answers), or undefined while it works. */
  get problem(): string | undefined {
    return this.failure?.message
  }

  /** A queue operation failed: logs only when the queue starts failing. */
  failed(error: unknown, operation: string): void {
    if (this.failure) return
    const message = describeError(error)
    this.failure = { since: this.clock.now(), message }
    this.logger.error(
      { operation, error: message },
      'the queue is failing; ingest answers 503 until it works again (nothing acknowledged is lost)'
    )
  }

  private readonly struggling = new Set<string>()
  private sharedProbe: Promise<void> | undefined

  /**
   * An operation failed that may fail for its own reasons while the queue is fine (a statement that waited on a
   * lock another relay holds, a slow read on a large queue): only if a real write fails too is the queue failing
   * (ingest 503). Otherwise the operation's failure is logged once until `worked(operation)`, and it is retried
   * by its caller. Never throws.
   */
  async failedUnlessWritable(error: unknown, operation: string): Promise<void> {
    try {
      // Many deliveries may fail at once (one lock held by a frozen relay): one probe write answers them all.
      this.sharedProbe ??= this.probe().finally(() => (this.sharedProbe = undefined))
      await this.sharedProbe
    } catch (writeError) {
      this.failed(writeError, operation)
      return
    }
    this.succeeded()
    if (this.struggling.has(operation)) return
    this.struggling.add(operation)
    this.logger.warn(
      { operation, error: describeError(error) },
      `${operation} failed; the queue takes writes, so ingest goes on and it is tried again`
    )
  }

  /** An operation that failed (failedUnlessWritable) worked again: logged once. */
  worked(operation: string): void {
    if (this.struggling.delete(operation)) this.logger.info({ operation }, `${operation}: works again`)
  }

  /** A write succeeded: logs when the queue recovers. */
  succeeded(): void {
    if (!this.failure) return
    const downMs = this.clock.now() - this.failure.since
    this.failure = undefined
    this.logger.info({ downMs }, 'the queue takes writes again; ingest accepts events')
  }

  /** While failing, probes with a real write; called on a timer. Never throws. */
  async check(): Promise<void> {
    if (!this.failure || this.probing) return
    this.probing = true
    try {
      await this.probe()
      this.succeeded()
    } catch {
      // Still failing: already logged when it started.
    } finally {
      this.probing = false
    }
  }
}

/** An error as one line without secrets (a PostgreSQL URL's password never reaches here: pg does not print it). */
export function describeError(error: unknown): string {
  if (error instanceof Error)
    return `${(error as { code?: string }).code ? `${(error as { code?: string }).code}: ` : ''}${error.message}`.slice(
      0,
      500
    )
  return String(error).slice(0, 500)
}
