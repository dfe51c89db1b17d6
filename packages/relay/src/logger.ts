import { writeSync } from 'node:fs'
import pino, { type DestinationStream, type Logger } from 'pino'

/** Paths pino replaces with "[redacted]": write keys, project API keys, webhook tokens and credentials never reach a log. */
export const REDACT_PATHS = [
  'writeKey',
  'projectApiKey',
  'api_key',
  'authorization',
  '*.writeKey',
  '*.projectApiKey',
  '*.api_key',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers.api_key',
  'sources[*].writeKey',
  'sources[*].projectApiKey',
  'webhookToken',
  '*.webhookToken',
  'sources[*].webhookToken',
  'sources[*].segment.writeKey',
  'segment.writeKey',
  'token',
  '*.token'
]

/** Log lines that could not be written (stdout on a full disk, a closed pipe or descriptor): counted, then dropped. */
export const logWriteErrors = { count: 0 }

/** How often a line is offered to a pipe that is full for now (EAGAIN) before it is dropped. */
const AGAIN_TRIES = 100

/**
 * Standard output as a log destination that can never end the process: each line is written at once (so a
 * crash loses none), and a write that fails — ENOSPC, EPIPE, EBADF, a pipe that stays full — drops the line and
 * counts it (`relay_log_write_errors_total`) instead of throwing or emitting an unhandled 'error'.
 */
export function safeStdout(fd = 1): DestinationStream {
  return {
    write(line: string): void {
      let bytes = Buffer.from(line, 'utf8')
      let again = 0
      while (bytes.length > 0) {
        try {
          bytes = bytes.subarray(writeSync(fd, bytes))
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EAGAIN' && ++again < AGAIN_TRIES) continue
          logWriteErrors.count++
          return
        }
      }
    }
  }
}

/** The relay's JSON logger (pino), with secrets redacted. */
export function createLogger(options: { level?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: options.level ?? process.env.LOG_LEVEL ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { service: 'oneflow-relay' }
    },
    options.destination ?? safeStdout()
  )
}
