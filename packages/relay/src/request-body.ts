/**
 * Request bodies as Segment's clients send them: JSON (as `application/json` or, from browsers, `text/plain`),
 * possibly compressed (`Content-Encoding: gzip`, as Segment's Android library always sends batches, or
 * `deflate`). The size limit holds for the bytes on the wire (fastify's bodyLimit) and again for the decoded
 * body: decompression stops at the limit, so a small gzip that inflates to gigabytes costs only the limit.
 */
import { promisify } from 'node:util'
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

const tooLarge = (error: unknown) => (error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError

/** The body's bytes after undoing `Content-Encoding`, never more than `limit` of them. */
export async function decodeBody(raw: Buffer, contentEncoding: string | undefined, limit: number, what: string): Promise<Buffer> {
  const encoding = (contentEncoding ?? '').trim().toLowerCase()
  if (encoding === '' || encoding === 'identity') return raw
  const options = { maxOutputLength: limit }
  const decode = async (fn: (buf: Buffer, o: typeof options) => Promise<Buffer>): Promise<Buffer> => {
    try {
      return await fn(raw, options)
    } catch (error) {
      if (tooLarge(error)) throw new BodyError(`the request body is over ${what} once decompressed`, 400, 'request_too_large', limit)
      throw error
    }
  }
  try {
    if (encoding === 'gzip' || encoding === 'x-gzip') return await decode(decoders.gzip)
    if (encoding === 'deflate') {
      // RFC 9110's deflate is zlib-wrapped; some clients send raw deflate: take either.
      return await decode(decoders.deflate).catch((error: unknown) => (error instanceof BodyError ? Promise.reject(error) : decode(decoders.deflateRaw)))
    }
  } catch (error) {
    if (error instanceof BodyError) throw error
    throw new BodyError(`the body is not valid ${encoding} data (Content-Encoding: ${encoding})`, 400, 'invalid_encoding')
  }
  throw new BodyError(`Content-Encoding "${encoding}" is not supported; send the body as it is, or with gzip or deflate`, 415, 'unsupported_encoding')
}

/** The decoded body parsed as JSON (an empty body is `undefined`). */
export async function parseJsonBody(raw: Buffer, contentEncoding: string | undefined, limit: number, what: string): Promise<unknown> {
  const bytes = await decodeBody(raw, contentEncoding, limit, what)
  if (bytes.length === 0) return undefined
  try {
    return JSON.parse(bytes.toString('utf8'))
  } catch {
    throw new BodyError('the body is not valid JSON', 400, 'invalid_json')
  }
}
