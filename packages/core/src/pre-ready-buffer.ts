/**
 * What both browser adapters keep while 1Flow's web SDK loads: a bounded buffer that hands its items over in
 * dispatch order, synchronously, the moment the real SDK is ready. Pure: no timers, no globals; the adapter
 * decides when to flush and how to log a drop.
 */

/** Events kept while the SDK loads, unless the settings say otherwise. */
export const DEFAULT_BUFFER_LIMIT = 100

export type DropReason = 'buffer-full' | 'sdk-failed'

export class PreReadyBuffer<T> {
  private items: Array<{ readonly item: T; readonly rank: number }> = []

  readonly limit: number
  /** Called for every item that is not kept or never delivered, with why. */
  private readonly onDrop: (item: T, reason: DropReason) => void

  constructor(limit: number, onDrop: (item: T, reason: DropReason) => void) {
    this.limit = limit
    this.onDrop = onDrop
  }

  get size(): number {
    return this.items.length
  }

  /**
   * Keeps `item` until flushed; `rank` is its place in dispatch order (default: arrival order). False, and
   * `onDrop(item, 'buffer-full')`, when the buffer already holds `limit` items.
   */
  push(item: T, rank: number = this.items.length): boolean {
    if (this.items.length >= this.limit) {
      this.onDrop(item, 'buffer-full')
      return false
    }
    this.items.push({ item, rank })
    return true
  }

  /**
   * Hands every item to `deliver` in dispatch order (ties in arrival order), synchronously, and empties the
   * buffer. An item `deliver` throws on is reported to `onError` and does not stop the ones behind it.
   */
  flush(deliver: (item: T) => void, onError: (item: T, error: unknown) => void): void {
    // Array#sort is stable: equal ranks keep their arrival order.
    const waiting = this.items.sort((a, b) => a.rank - b.rank)
    this.items = []
    for (const { item } of waiting) {
      try {
        deliver(item)
      } catch (error) {
        onError(item, error)
      }
    }
  }

  /** Empties the buffer, reporting each item to `onDrop` with `reason` (the SDK did not load). */
  dropAll(reason: DropReason): number {
    const dropped = this.items
    this.items = []
    for (const { item } of dropped) this.onDrop(item, reason)
    return dropped.length
  }
}
