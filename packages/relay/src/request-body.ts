/**
 * Request bodies as Segment's clients send them: JSON (as `application/json` or, from browsers, `text/plain`),
 * possibly compressed (`Content-Encoding: gzip`, as Segment's Android library always sends batches, or
 * `deflate`). The size limit holds for the bytes on the wire (fastify's bodyLimit) and again for the decoded
 * body: decompression stops at the limit, so a small gzip that inflates to gigabytes costs only the limit.
 */
import { promisify } from 'node:util'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { gunzip, inflate, inflateRaw } from 'node:zlib'

const decoders = { gzip: promisify(gunzip), deflate: promisify(inflate), deflateRaw: promisify(inflateRaw) }

/** A body the relay cannot read; `statusCode` and `code` are what the client is answered. */
export class BodyError extends Error {
  override readonly name = 'BodyError'
  constructor(
    message: string,
    readonly statusCode: 400 | 415,
    readonly code: 'invalid_json' | 'request_too_large' | 'unsupported_encoding' | 'invalid_encoding',
    readonly limit?: number
  ) {
    super(message)
  }
}

const tooLarge = (error: unknown) =>
  (error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError

/** The body's bytes after undoing `Content-Encoding`, never more than `limit` of them. */
export async function decodeBody(
  raw: Buffer,
  contentEncoding: string | undefined,
  limit: number,
  what: string
): Promise<Buffer> {
  const encoding = (contentEncoding ?? '').trim().toLowerCase()
  if (encoding === '' || encoding === 'identity') return raw
  const options = { maxOutputLength: limit }
  const decode = async (fn: (buf: Buffer, o: typeof options) => Promise<Buffer>): Promise<Buffer> => {
    try {
      return await fn(raw, options)
    } catch (error) {
      if (tooLarge(error))
        throw new BodyError(`the request body is over ${what} once decompressed`, 400, 'request_too_large', limit)
      throw error
    }
  }
  try {
    if (encoding === 'gzip' || encoding === 'x-gzip') return await decode(decoders.gzip)
    if (encoding === 'deflate') {
      // RFC 9110's deflate is zlib-wrapped; some clients send raw deflate: take either.
      return await decode(decoders.deflate).catch((error: unknown) =>
        error instanceof BodyError ? Promise.reject(error) : decode(decoders.deflateRaw)
      )
    }
  } catch (error) {
    if (error instanceof BodyError) throw error
    throw new BodyError(
      `the body is not valid ${encoding} data (Content-Encoding: ${encoding})`,
      400,
      'invalid_encoding'
    )
  }
  throw new BodyError(
    `Content-Encoding "${encoding}" is not supported; send the body as it is, or with gzip or deflate`,
    415,
    'unsupported_encoding'
  )
}

/** The decoded body parsed as JSON (an empty body is `undefined`). */
export async function parseJsonBody(
  raw: Buffer,
  contentEncoding: string | undefined,
  limit: number,
  what: string
): Promise<unknown> {
  const bytes = await decodeBody(raw, contentEncoding, limit, what)
  if (bytes.length === 0) return undefined
  try {
    return JSON.parse(bytes.toString('utf8'))
  } catch {
    throw new BodyError('the body is not valid JSON', 400, 'invalid_json')
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

/**
 * Reserves the request's body in `budget` until its answer is sent (or its connection dies). False when the
 * budget is spent: the caller answers 503 and closes the connection.
 */
export function reserveBody(budget: BodyBudget, req: FastifyRequest, reply: FastifyReply, limit: number): boolean {
  const declared = Number(req.headers['content-length'])
  const release = budget.reserve(Number.isFinite(declared) && declared >= 0 ? Math.min(declared, limit) : limit)
  if (!release) return false
  reply.raw.once('close', release)
  return true
}

/** The 503 for a request the body budget cannot take. */
export const BUSY = { error: 'the relay is receiving too much at once; retry shortly', code: 'busy' } as const

/** The body budget: 64 MiB, about 130 full batch requests arriving at the same time. */
export const BODY_BUDGET_BYTES = 64 * 1024 * 1024
