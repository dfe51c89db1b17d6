/**
 * Request bodies as Segment's clients send them: JSON (as `application/json` or, from browsers, `text/plain`),
 * possibly compressed (`Content-Encoding: gzip`, as Segment's Android library always sends batches, or
 * `deflate`), maybe starting with a UTF-8 byte order mark. A body is read as a stream and never held whole
 * beyond its limit: the limit holds for the bytes on the wire and again for the decoded body, and decoding
 * stops at the limit, so a small gzip that inflates to gigabytes costs only the limit. A body whose write key
 * can only be in the body itself is read no further than its first few KB until that key is found and known.
 */
import type { Readable } from 'node:stream'
import { createGunzip, createInflate, createInflateRaw, type Gunzip, type Inflate, type InflateRaw } from 'node:zlib'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { OneFlowError } from '@oneflow-seg/core'

export type BodyErrorCode =
  | 'invalid_json'
  | 'request_too_large'
  | 'unsupported_encoding'
  | 'invalid_encoding'
  | 'missing_write_key'
  | 'unknown_write_key'

/** A body the relay cannot read; `statusCode` and `code` are what the client is answered. */
export class BodyError extends OneFlowError {
  override readonly name = 'BodyError'
  readonly remedy = 'fix-payload'
  constructor(
    message: string,
    readonly statusCode: 400 | 401 | 415,
    readonly code: BodyErrorCode,
    readonly limit?: number
  ) {
    super(message)
  }
}

/**
 * How much of a body without HTTP Basic auth is read to find its write key: JSON.stringify puts `writeKey`
 * first in analytics.js's batches, and a single event of older browser libraries is usually whole within this.
 */
export const KEY_PREFIX_BYTES = 8 * 1024

/** What a body read needs to know. */
export interface ReadOptions {
  readonly contentEncoding: string | undefined
  /** At most this many bytes on the wire, and again once decoded. */
  readonly limit: number
  /** The limit in words, for the error ("500 KB per batch request"). */
  readonly what: string
  /**
   * When the request has no HTTP Basic write key: whether a key is one the relay knows. The decoded body's
   * first KEY_PREFIX_BYTES must hold a top-level `"writeKey"` it knows, or reading stops there with a 401.
   */
  readonly knownKey?: (key: string) => boolean
}

/** A decoded body and its size. */
export interface DecodedBody {
  readonly bytes: Buffer
  readonly length: number
}

const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf])

type Decoder = Gunzip | Inflate | InflateRaw

/** zlib's two-byte header (RFC 1950): compression method 8 and a check that makes the pair a multiple of 31. */
const isZlibHeader = (b: Buffer) =>
  b.length >= 2 && ((b[0] as number) & 0x0f) === 8 && ((b[0] as number) * 256 + (b[1] as number)) % 31 === 0

function decoderFor(encoding: string, first: Buffer): Decoder | undefined {
  if (encoding === '' || encoding === 'identity') return undefined
  if (encoding === 'gzip' || encoding === 'x-gzip') return createGunzip()
  // RFC 9110's deflate is zlib-wrapped; some clients send raw deflate: take either.
  if (encoding === 'deflate') return isZlibHeader(first) ? createInflate() : createInflateRaw()
  throw new BodyError(
    `Content-Encoding "${encoding}" is not supported; send the body as it is, or with gzip or deflate`,
    415,
    'unsupported_encoding'
  )
}

/**
 * Reads a request body from its stream: at most `limit` bytes on the wire and `limit` decoded, the write key
 * checked on the decoded prefix when `knownKey` is given. Rejects with a BodyError; the stream is then left
 * unread (the caller answers and closes the connection).
 */
export function readBody(stream: Readable, options: ReadOptions): Promise<DecodedBody> {
  const { limit, what, knownKey } = options
  const encoding = (options.contentEncoding ?? '').trim().toLowerCase()
  return new Promise<DecodedBody>((resolve, reject) => {
    let wire = 0
    const decoded: Buffer[] = []
    let decodedLength = 0
    let decoder: Decoder | undefined
    let started = false
    let settled = false
    let keyChecked = knownKey === undefined
    const fail = (error: unknown) => {
      if (settled) return
      settled = true
      stream.off('data', onWire)
      stream.pause()
      decoder?.destroy()
      reject(error)
    }
    const tooLarge = (decodedPart: boolean) =>
      new BodyError(
        `the request body is over ${what}${decodedPart ? ' once decompressed' : ''}`,
        400,
        'request_too_large',
        limit
      )
    const checkKey = (final: boolean) => {
      if (keyChecked || (!final && decodedLength < KEY_PREFIX_BYTES)) return
      keyChecked = true
      const prefix = Buffer.concat(decoded).subarray(0, KEY_PREFIX_BYTES)
      const key = topLevelWriteKey(stripBom(prefix).toString('utf8'))
      if (key === undefined)
        throw new BodyError(
          `no write key: send it as the HTTP Basic username ("writeKey:"), or as "writeKey" within the body's first ${KEY_PREFIX_BYTES} bytes`,
          401,
          'missing_write_key'
        )
      if (!(knownKey as (k: string) => boolean)(key)) throw new BodyError('unknown write key', 401, 'unknown_write_key')
    }
    const onDecoded = (chunk: Buffer) => {
      if (settled) return
      decodedLength += chunk.length
      if (decodedLength > limit) return fail(tooLarge(decoder !== undefined))
      decoded.push(chunk)
      try {
        checkKey(false)
      } catch (error) {
        fail(error)
      }
    }
    const finish = () => {
      if (settled) return
      try {
        checkKey(true)
      } catch (error) {
        return fail(error)
      }
      settled = true
      resolve({ bytes: decoded.length === 1 ? (decoded[0] as Buffer) : Buffer.concat(decoded), length: decodedLength })
    }
    const onWire = (chunk: Buffer) => {
      if (settled) return
      wire += chunk.length
      if (wire > limit) return fail(tooLarge(false))
      if (!started) {
        started = true
        try {
          decoder = decoderFor(encoding, chunk)
        } catch (error) {
          return fail(error)
        }
        if (decoder) {
          decoder.on('data', onDecoded)
          decoder.on('end', finish)
          decoder.on('error', () =>
            fail(
              new BodyError(
                `the body is not valid ${encoding} data (Content-Encoding: ${encoding})`,
                400,
                'invalid_encoding'
              )
            )
          )
        }
      }
      if (decoder) decoder.write(chunk)
      else onDecoded(chunk)
    }
    stream.on('data', onWire)
    stream.on('error', fail)
    stream.on('end', () => {
      if (settled) return
      if (!started) {
        started = true
        try {
          decoder = decoderFor(encoding, Buffer.alloc(0))
        } catch (error) {
          return fail(error)
        }
        // An empty compressed body decodes to nothing.
        decoder?.destroy()
        decoder = undefined
      }
      if (decoder) decoder.end()
      else finish()
    })
  })
}

const stripBom = (bytes: Buffer) => (bytes.subarray(0, 3).equals(UTF8_BOM) ? bytes.subarray(3) : bytes)

/** The decoded body parsed as JSON (an empty body is `undefined`); a leading UTF-8 byte order mark is skipped. */
export function parseJson(bytes: Buffer): unknown {
  const text = stripBom(bytes)
  if (text.length === 0) return undefined
  try {
    return JSON.parse(text.toString('utf8'))
  } catch {
    throw new BodyError('the body is not valid JSON', 400, 'invalid_json')
  }
}

/**
 * The value of `"writeKey"` among the top-level keys of a JSON object, read from the start of its text (which
 * may be cut anywhere); undefined when the prefix holds no such string value.
 */
export function topLevelWriteKey(text: string): string | undefined {
  let i = 0
  const n = text.length
  const skipSpace = () => {
    while (i < n && (text[i] === ' ' || text[i] === '\n' || text[i] === '\r' || text[i] === '\t')) i++
  }
  /** A JSON string starting at i (a quote); its value, or undefined when it is cut off or malformed. */
  const readString = (): string | undefined => {
    const start = i
    i++
    while (i < n) {
      const c = text[i]
      if (c === '\\') i += 2
      else if (c === '"') {
        i++
        try {
          return JSON.parse(text.slice(start, i)) as string
        } catch {
          return undefined
        }
      } else i++
    }
    return undefined
  }
  /** Skips one value of any kind; false when the text ends first. */
  const skipValue = (): boolean => {
    skipSpace()
    if (i >= n) return false
    const c = text[i]
    if (c === '"') return readString() !== undefined
    if (c === '{' || c === '[') {
      let depth = 0
      while (i < n) {
        const d = text[i]
        if (d === '"') {
          if (readString() === undefined) return false
          continue
        }
        if (d === '{' || d === '[') depth++
        else if (d === '}' || d === ']') {
          depth--
          if (depth === 0) {
            i++
            return true
          }
        }
        i++
      }
      return false
    }
    while (i < n && !',}] \n\r\t'.includes(text[i] as string)) i++
    return i < n
  }
  skipSpace()
  if (text[i] !== '{') return undefined
  i++
  for (;;) {
    skipSpace()
    if (text[i] !== '"') return undefined
    const key = readString()
    if (key === undefined) return undefined
    skipSpace()
    if (text[i] !== ':') return undefined
    i++
    skipSpace()
    if (key === 'writeKey') {
      if (text[i] !== '"') return undefined
      const value = readString()
      // JSON keeps the last of repeated keys; one that is cut off cannot be trusted either way.
      return value === undefined || value === '' ? undefined : value
    }
    if (!skipValue()) return undefined
    skipSpace()
    if (text[i] !== ',') return undefined
    i++
  }
}

/**
 * How many body bytes may be in the relay's memory at once, across all requests still arriving. Each request
 * reserves its declared length (or its route's limit when it declares none) before its body is read; past the
 * budget it is answered 503 at once and its connection closed, so a flood of slow or stalled uploads holds at
 * most this much memory, whatever their number.
 */
export class BodyBudget {
  private used = 0

  constructor(readonly maxBytes: number) {}

  /** Reserves `bytes`; returns the release function, or undefined when the budget is spent. */
  reserve(bytes: number): (() => void) | undefined {
    if (this.used + bytes > this.maxBytes && this.used > 0) return undefined
    this.used += bytes
    let released = false
    return () => {
      if (released) return
      released = true
      this.used -= bytes
    }
  }

  get inUse(): number {
    return this.used
  }
}

/** The length a request declares for its body, or undefined (chunked, or none given). */
export function declaredLength(req: FastifyRequest): number | undefined {
  const declared = Number(req.headers['content-length'])
  return req.headers['content-length'] !== undefined && Number.isFinite(declared) && declared >= 0
    ? declared
    : undefined
}

/** Whether a request comes with a body (a declared length above 0, or a chunked one). */
export function hasBody(req: FastifyRequest): boolean {
  const declared = declaredLength(req)
  return declared === undefined ? req.headers['transfer-encoding'] !== undefined : declared > 0
}

/**
 * Reserves the request's body in `budget` until its answer is sent (or its connection dies). False when the
 * budget is spent: the caller answers 503 and closes the connection.
 */
export function reserveBody(budget: BodyBudget, req: FastifyRequest, reply: FastifyReply, limit: number): boolean {
  const declared = declaredLength(req)
  const release = budget.reserve(declared !== undefined ? Math.min(declared, limit) : limit)
  if (!release) return false
  reply.raw.once('close', release)
  return true
}

/** The 503 for a request the body budget cannot take. */
export const BUSY = { error: 'the relay is receiving too much at once; retry shortly', code: 'busy' } as const

/** The body budget: 64 MiB, about 130 full batch requests arriving at the same time. */
export const BODY_BUDGET_BYTES = 64 * 1024 * 1024
