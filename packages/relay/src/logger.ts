import pino, { type Logger } from 'pino'

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

/** The relay's JSON logger (pino), with secrets redacted. */
export function createLogger(options: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  return pino(
    {
      level: options.level ?? process.env.LOG_LEVEL ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { service: 'oneflow-relay' }
    },
    options.destination ?? process.stdout
  )
}
