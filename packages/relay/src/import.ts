/**
 * `oneflow-relay import`: historical events (Segment's export format — one event per line — or any Segment-spec
 * NDJSON, optionally gzipped) into the queue with their own timestamps, each checked as ingest checks it (a
 * rejected event becomes a dead letter, never silently dropped), messageIds deduplicated per source. Delivery then
 * goes at the relay's rate limit, as for any event. Streams the file in chunks, so memory stays flat whatever its
 * size; after each committed chunk it writes how far it got, so `--resume` continues an interrupted run.
 */
import { createHash } from 'node:crypto'
import { createReadStream, existsSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { Readable, Transform } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { OneFlowError } from '@oneflow-seg/core'
import type { SourceConfig } from './config'
import { acceptRequest } from './ingest'
import { previewEvent } from './preview'
import type { Queue } from './queue/queue'

/** Events committed together: one queue write (one fsync on SQLite) per chunk. */
export const IMPORT_CHUNK = 1_000

export interface ImportOptions {
  /** A file path, or "-" for standard input. */
  readonly file: string
  readonly source: SourceConfig
  /** Counts what would be queued, skipped and rejected; writes nothing. */
  readonly dryRun?: boolean
  /** Continues where an interrupted run of the same file stopped (its state file). */
  readonly resume?: boolean
  /** Called after each chunk with the totals so far and the bytes read (for a progress line). */
  readonly progress?: (totals: ImportTotals, bytesRead: number, bytesTotal: number | undefined) => void
  readonly now?: () => number
}

export interface ImportTotals {
  /** Lines read (blank lines included), from the start of the file. */
  lines: number
  /** Queued for delivery (dry run: would be sent to 1Flow). */
  queued: number
  /** Already in the queue's dedup window (same messageId from the same source). */
  duplicates: number
  /** Refused by ingest's rules, kept as dead letters (dry run: counted only). */
  rejected: number
  /** Dry run only: accepted, but the source's mappings send nothing for it (skip reasons). */
  skipped: number
}

/** The import cannot start or read its input. */
export class ImportError extends OneFlowError {
  override readonly name = 'ImportError'
  readonly code = 'IMPORT_FAILED'
  readonly remedy = 'fix-payload'
}

/** Where an import of `file` records how far it got. */
export const stateFileOf = (file: string) => `${file}.import-state.json`

export async function importEvents(queue: Queue | undefined, options: ImportOptions): Promise<ImportTotals> {
  const { file, source } = options
  const fromStdin = file === '-'
  const stateFile = fromStdin || options.dryRun ? undefined : stateFileOf(file)
  let skipLines = 0
  if (stateFile && existsSync(stateFile)) {
    if (!options.resume)
      throw new ImportError(
        `an earlier import of ${file} stopped part way (${stateFile}): run again with --resume to continue, or delete that file to start over`
      )
    skipLines = (JSON.parse(readFileSync(stateFile, 'utf8')) as ImportTotals).lines
  } else if (options.resume && !fromStdin && !options.dryRun)
    throw new ImportError(`nothing to resume: no earlier import of ${file} (${stateFile})`)
  if (options.resume && fromStdin) throw new ImportError('--resume needs a file: standard input cannot be read again')
  if (!fromStdin && !existsSync(file)) throw new ImportError(`cannot read ${file}: no such file`)
  if (!fromStdin && !statSync(file).isFile()) throw new ImportError(`cannot read ${file}: not a file`)
  const totals: ImportTotals =
    stateFile && skipLines > 0
      ? (JSON.parse(readFileSync(stateFile, 'utf8')) as ImportTotals)
      : { lines: 0, queued: 0, duplicates: 0, rejected: 0, skipped: 0 }
  // Where the import records how far it got must be writable before anything is committed: else an interrupted
  // run could not be resumed, and running it again would queue what was committed a second time.
  if (stateFile)
    try {
      writeState(stateFile, totals)
    } catch (error) {
      throw new ImportError(
        `cannot write ${stateFile}, where the import records how far it got (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): import from a directory you can write, or read the events from standard input ("-", which cannot be resumed)`
      )
    }

  const raw: Readable = fromStdin ? process.stdin : createReadStream(file)
  const bytesTotal = fromStdin ? undefined : statSync(file).size
  let bytesRead = 0
  const counted = raw.pipe(
    new Transform({
      transform(chunk: Buffer, _enc, done) {
        bytesRead += chunk.length
        done(null, chunk)
      }
    })
  )
  const lines = createInterface({ input: await maybeGunzip(counted), crlfDelay: Number.POSITIVE_INFINITY })
  // A synthetic write key for the one source: acceptRequest routes by key, and the import needs none of its own.
  const sources = new Map([['(import)', source]])
  const now = options.now ?? Date.now
  let chunk: unknown[] = []
  let lineNo = 0
  const flush = async () => {
    if (chunk.length > 0) {
      const accepted = acceptRequest(
        'batch',
        { batch: chunk, writeKey: '(import)' },
        undefined,
        sources,
        now(),
        newId,
        {
          historical: true
        }
      )
      if (!('events' in accepted)) throw new ImportError(`the events could not be read: ${accepted.body.error}`)
      if (options.dryRun) {
        totals.rejected += accepted.rejected.length
        for (const e of accepted.events) {
          const preview = previewEvent(JSON.parse(e.body), source)
          if (preview.sent.length > 0) totals.queued++
          else totals.skipped++
        }
      } else {
        const q = queue as Queue
        const result = await q.enqueue([...accepted.events, ...accepted.deadLetters]).catch((error: Error) => {
          throw new ImportError(
            `the queue could not take the events after line ${totals.lines} (${error.message}); what was committed before stays${stateFile ? ': run again with --resume to continue' : ''}`
          )
        })
        totals.queued += result.accepted
        totals.duplicates += result.duplicates
        totals.rejected += accepted.deadLetters.length
      }
      chunk = []
    }
    totals.lines = lineNo
    if (stateFile) writeState(stateFile, totals)
    options.progress?.(totals, bytesRead, bytesTotal)
  }
  try {
    for await (const raw of lines) {
      lineNo++
      if (lineNo <= skipLines) continue
      // Editors and some exports start the file with a byte order mark.
      const line = lineNo === 1 ? raw.replace(/^\uFEFF/, '') : raw
      if (line.trim() === '') continue
      let event: unknown
      try {
        event = JSON.parse(line)
      } catch {
        // Not an event at all: kept as ingest keeps what it cannot read (a dead letter with its line, whole).
        event = { line: lineNo, unreadable: line.slice(0, 32_000) }
      }
      // An event without a messageId gets one from its own content: the same line imported again is a duplicate.
      if (typeof event === 'object' && event !== null && !Array.isArray(event) && !('messageId' in event))
        (event as Record<string, unknown>).messageId =
          `import-${createHash('sha256').update(line).digest('hex').slice(0, 32)}`
      chunk.push(event)
      if (chunk.length >= IMPORT_CHUNK) await flush()
    }
  } catch (error) {
    if (error instanceof ImportError) throw error
    throw new ImportError(
      `reading ${fromStdin ? 'standard input' : file} failed after line ${lineNo} (${(error as Error).message}); what was committed before stays queued${stateFile ? ': once the file is whole, run again with --resume to continue' : ''}`
    )
  }
  await flush()
  // Done: nothing to resume.
  if (stateFile && existsSync(stateFile)) unlinkSync(stateFile)
  return totals
}

let idSeq = 0
const newId = () => `import-${process.pid}-${Date.now().toString(36)}-${(idSeq++).toString(36)}`

/** Writes the state file whole or not at all (a crash never leaves half of it). */
function writeState(file: string, totals: ImportTotals): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(totals))
  renameSync(`${file}.tmp`, file)
}

/** The stream itself, or gunzipped when it starts with gzip's magic bytes. */
async function maybeGunzip(input: Readable): Promise<Readable> {
  const first: Buffer | null = await new Promise((resolve) => {
    const onReadable = () => {
      input.off('end', onEnd)
      resolve(input.read() as Buffer | null)
    }
    const onEnd = () => {
      input.off('readable', onReadable)
      resolve(null)
    }
    input.once('readable', onReadable)
    input.once('end', onEnd)
  })
  if (first === null) return Readable.from([])
  input.unshift(first)
  return first[0] === 0x1f && first[1] === 0x8b ? input.pipe(createGunzip()) : input
}
