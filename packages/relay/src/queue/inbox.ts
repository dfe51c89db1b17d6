import type { DeadLetterInfo, Job } from './queue'

/**
 * The inbox both queues share: each request's accepted events of one lane as one row, in one text format, leased
 * straight from memory by the lane's one owner (docs/relay-queue.md, "Events leased from the inbox").
 */

/** Events in one inbox row at most (a batch request holds up to 2,500). */
export const INBOX_ROW_EVENTS = 500

/** An accepted event in an inbox row: messageId, sourceName, userKey, body (Segment JSON), receivedAt. */
export type InboxEvent = [string, string, string, string, number]

/** String.prototype.isWellFormed (Node 20; not in the TypeScript library this package targets). */
export const wellFormed = (s: string) => (s as string & { isWellFormed(): boolean }).isWellFormed()

/**
 * An inbox row's text: a JSON array with five entries per event (messageId, sourceName, userKey, the body's length,
 * receivedAt), a newline, then the bodies one after the other. A body is neither escaped into JSON when written
 * nor unescaped when read (each is a slice of the text): about a quarter of what reading and writing a row cost
 * when bodies were JSON strings inside the row's JSON. A body that is not well-formed UTF-16 (a lone surrogate,
 * which SQLite would store as three replacement characters) is kept in the header as a JSON string instead of its
 * length (PostgreSQL: a body with NUL too, which its text cannot hold: `storable`). Rows written before this format (one JSON array of events, which has no raw newline: JSON escapes it) are
 * read as they are. See docs/relay-queue.md, "SQLite: events leased from the inbox".
 */
export function packInbox(events: readonly InboxEvent[], storable: (body: string) => boolean = wellFormed): string {
  const header: Array<string | number> = []
  let bodies = ''
  for (const [messageId, sourceName, userKey, body, receivedAt] of events) {
    const raw = storable(body)
    header.push(messageId, sourceName, userKey, raw ? body.length : body, receivedAt)
    if (raw) bodies += body
  }
  return `${JSON.stringify(header)}\n${bodies}`
}

/** The events of an inbox row's text (packInbox's, or the JSON array rows held before it). */
export function unpackInbox(text: string): InboxEvent[] {
  const end = text.indexOf('\n')
  if (end < 0) return JSON.parse(text) as InboxEvent[]
  const header = JSON.parse(text.slice(0, end)) as Array<string | number>
  const events: InboxEvent[] = []
  let at = end + 1
  for (let i = 0; i < header.length; i += 5) {
    const body = header[i + 3] as string | number
    let piece: string
    if (typeof body === 'string') piece = body
    else {
      piece = text.slice(at, at + body)
      at += body
    }
    events.push([header[i] as string, header[i + 1] as string, header[i + 2] as string, piece, header[i + 4] as number])
  }
  if (at !== text.length) throw new SyntaxError(`its bodies take ${at} of its ${text.length} characters`)
  return events
}

/**
 * Job ids of events leased straight from the inbox: above every events-table id (AUTOINCREMENT counts from 1),
 * in arrival order (the inbox row, then the event's place in it; INBOX_SLOT > INBOX_ROW_EVENTS). Exact as
 * doubles while inbox ids stay below 2^40.
 */
export const INBOX_ID_BASE = 2 ** 52
export const INBOX_SLOT = 4096

/** An inbox row whose events are being leased (docs/relay-queue.md, "SQLite: events leased from the inbox"). */
export interface InboxRow {
  readonly id: number
  readonly lane: string
  /** Its events, until every one was taken (then dropped: the jobs in flight hold their own). */
  events: InboxEvent[] | undefined
  /** The next event to take. */
  next: number
  /** Events settled, or moved to the events table: bit i for event i (saved in the row's `done` column). */
  done: Uint8Array
  /** Events not done yet, taken or not. At 0 the row is deleted. */
  left: number
}

/** An event leased straight from the inbox: in flight, known to this process only. */
export interface Flying {
  readonly job: Job & { readonly lease: number }
  readonly row: InboxRow
  readonly index: number
  leaseUntil: number
}

/** Per lane: inbox rows read and not yet wholly taken, oldest first, and the last row id read. */
export interface LaneInbox {
  rows: InboxRow[]
  lastId: number
}

/** What happens to flying events a settle names: gone (delivered), dead, or back to the events table. */
export type FlyingOutcome =
  | { readonly kind: 'complete' }
  | { readonly kind: 'dead'; readonly info: DeadLetterInfo; readonly now: number }
  | {
      readonly kind: 'pending'
      /** When they are ready again (undefined: at once, without blocking their user: a lease taken back). */
      readonly readyAt?: number
      readonly failed?: { readonly error: string; readonly now: number }
    }

/** A leased job from an event's fields (an inbox event's order), its ids and its lease. */
export function leasedJob(
  id: number,
  projectId: string,
  [messageId, sourceName, userKey, body, receivedAt]: InboxEvent,
  attempts: number,
  firstAttemptAt: number | null,
  lease: number
): Job & { readonly lease: number } {
  return { id, messageId, sourceName, projectId, userKey, body, receivedAt, attempts, firstAttemptAt, lease }
}

export function isDone(done: Uint8Array, i: number): boolean {
  return ((done[i >> 3] as number) & (1 << (i & 7))) !== 0
}

/** Marks event `index` of `row` to be saved as done (see SqliteQueue.writeMarks). */
export function markDone(marks: Map<InboxRow, number[]>, row: InboxRow, index: number): void {
  let list = marks.get(row)
  if (list === undefined) marks.set(row, (list = []))
  list.push(index)
}

export function countDone(done: Uint8Array): number {
  let n = 0
  for (let b of done) for (; b !== 0; b &= b - 1) n++
  return n
}
