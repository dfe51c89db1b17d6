import type { DeadLetterInfo, Job, JobRef } from './queue'

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
  /** The transaction that wrote it (PostgreSQL's inbox: what a lane taken back checks, see PgLaneOwners.reclaim). */
  readonly xid?: string
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

/**
 * Splits the events a settle names into those of the events table (inbox jobs that moved there named by their id
 * in it; `alias` maps that id back to the job's) and those flying from the inbox. A fenced ref applies only while
 * its lease holds the event: flying with that token, or (moved) leased with it in the table.
 */
export function resolveRefs(
  refs: readonly JobRef[],
  flying: ReadonlyMap<number, Flying>,
  moved: ReadonlyMap<number, { readonly id: number }>
): { table: JobRef[]; mem: Flying[]; alias: Map<number, number> } {
  const table: JobRef[] = []
  const mem: Flying[] = []
  const alias = new Map<number, number>()
  const seen = new Set<number>()
  for (const ref of refs) {
    const id = typeof ref === 'number' ? ref : ref.id
    if (id < INBOX_ID_BASE) {
      table.push(ref)
      continue
    }
    const lease = typeof ref === 'number' ? undefined : ref.lease
    const f = flying.get(id)
    if (f !== undefined) {
      if ((lease === undefined || lease === f.job.lease) && !seen.has(id)) mem.push(f)
      seen.add(id)
      continue
    }
    const to = moved.get(id)
    if (to === undefined) continue
    alias.set(to.id, id)
    table.push(typeof ref === 'number' || lease === undefined ? to.id : { ...ref, id: to.id })
  }
  return { table, mem, alias }
}

/**
 * The rows' `done` bitmaps and counts of events left with `marks` set (to be saved by the caller; a row with none
 * left is deleted), and how to apply them in memory once saved.
 */
export function nextMarks(marks: ReadonlyMap<InboxRow, readonly number[]>): {
  after: Array<[InboxRow, Uint8Array, number]>
  apply: () => void
} {
  const after: Array<[InboxRow, Uint8Array, number]> = []
  for (const [row, indexes] of marks) {
    const done = row.done.slice()
    let left = row.left
    for (const i of indexes) {
      if (isDone(done, i)) continue
      done[i >> 3] = (done[i >> 3] as number) | (1 << (i & 7))
      left--
    }
    after.push([row, done, left])
  }
  return {
    after,
    apply: () => {
      for (const [row, done, left] of after) {
        row.done = done
        row.left = left
      }
    }
  }
}

/** What an events-table row holds beyond its event, as either queue writes it for an event leaving the inbox. */
export interface EventRowFields {
  readonly nextAttemptAt?: number
  readonly attempts?: number
  readonly firstAttemptAt?: number | null
  readonly lastError?: string
  readonly leaseToken?: number
  readonly leaseUntil?: number
  readonly dead?: DeadLetterInfo
  readonly deadAt?: number
}

/**
 * Where a lease puts each inbox event it looks at, in order (one rule for both queues): with its user's earlier
 * events of this lease, or in the events table behind the user's rows there. A user already flying from an earlier
 * lease is moved into the table whole (`convert`: its flying events as leased, this one as held), so that each user
 * is in one place and the table's ids stay the user's order of arrival.
 */
export class InboxPlacement {
  /** Users whose flying events move into the events table with this lease. */
  readonly convert = new Set<string>()
  private readonly leased = new Set<string>()
  private readonly parked = new Set<string>()

  constructor(
    /** The user has events flying from an earlier lease. */
    private readonly flying: (user: string) => boolean,
    /** The user has rows waiting or in flight in the events table. */
    private readonly inTable: (user: string) => boolean
  ) {}

  /** Whether this lease takes the user's next inbox event (else it is parked in the table). */
  leases(user: string): boolean {
    if (this.leased.has(user)) return true
    if (this.parked.has(user)) return false
    if (this.flying(user)) {
      this.convert.add(user)
      this.parked.add(user)
      return false
    }
    if (this.inTable(user)) {
      this.parked.add(user)
      return false
    }
    this.leased.add(user)
    return true
  }
}
