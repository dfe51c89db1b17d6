export { createRelay, openQueue } from './relay'
export type { Relay, RelayOptions } from './relay'
export { loadConfig, parseConfig, projectIdOf, ConfigError, DEFAULTS, RelayConfigSchema } from './config'
export type { RelayConfig, RelayConfigFile, SourceConfig } from './config'
export { acceptRequest, writeKeyFromBasic } from './ingest'
export type { IngestError, Accepted, RejectedEvent } from './ingest'
export { SqliteQueue } from './queue/sqlite-queue'
export { PgQueue } from './queue/pg-queue'
export type {
  Queue,
  NewEvent,
  Job,
  DeadLetter,
  DeadLetterInfo,
  QueueStats,
  EnqueueResult,
  Selection
} from './queue/queue'
export { RateLimiter, systemClock } from './rate-limiter'
export type { Clock, SendLimiter } from './rate-limiter'
export { createLogger, REDACT_PATHS } from './logger'
export { createMetrics } from './metrics'
export type { Metrics } from './metrics'
export { VERSION } from './version'
