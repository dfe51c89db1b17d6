#!/usr/bin/env node
import { existsSync, readFileSync } from 'node:fs'
import { Command, InvalidArgumentError } from 'commander'
import { ConfigError, displayQueue, laneLabels, loadConfig, type RelayConfig } from './config'
import { createLogger, logWriteErrors } from './logger'
import { recheckEvent } from './ingest'
import { describeSource, parsePreviewInput, PreviewInputError, previewEvents } from './preview'
import { ImportError, importEvents, type ImportTotals } from './import'
import { createRelay, openQueue } from './relay'
import type { Queue, Selection } from './queue/queue'
import { VERSION } from './version'

const program = new Command('oneflow-relay')
  .description("Segment's HTTP Tracking API in, 1Flow's HTTP API out: a durable queue in between.")
  .version(VERSION)

const configOption = ['-c, --config <file>', 'the relay config (JSON)', 'oneflow-relay.json'] as const

/** Reads the config or exits saying what is wrong. `queueOnly`: for commands that read only the queue (see parseConfig). */
function readConfig(file: string, options: { queueOnly?: boolean } = {}): RelayConfig {
  try {
    return loadConfig(file, process.env, options)
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    console.error(`${file} is not a usable config:`)
    for (const p of error.problems) console.error(`  - ${p.key}: ${p.message}`)
    process.exit(1)
  }
}

program
  .command('start')
  .description('run the relay (ingest + delivery) until SIGTERM/SIGINT')
  .option(...configOption)
  .action(async (opts: { config: string }) => {
    const config = readConfig(opts.config)
    // Logs go through safeStdout, which never throws; anything else written to stdout or stderr must not end the
    // process either when they fail (a full disk, a reader that went away).
    for (const stream of [process.stdout, process.stderr]) stream.on('error', () => logWriteErrors.count++)
    const logger = createLogger()
    const relay = await createRelay(config, { logger })
    let stopping = false
    const stop = (signal: string) => {
      if (stopping) return
      stopping = true
      logger.info({ signal }, 'stopping: no new events accepted, deliveries in flight finish')
      const hard = setTimeout(() => {
        logger.error('could not stop in time; exiting (queued events stay in the queue)')
        process.exit(1)
      }, config.shutdownGraceMs)
      hard.unref()
      void relay.stop().then(() => process.exit(0))
    }
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGINT', () => stop('SIGINT'))
    await relay.start()
  })

program
  .command('check-config')
  .description('validate a config file and say what it will do')
  .option(...configOption)
  .action((opts: { config: string }) => {
    const config = readConfig(opts.config)
    console.log(`${opts.config} is valid.`)
    console.log(`  listen: http://${config.listen.host}:${config.listen.port}`)
    console.log(`  queue:  ${displayQueue(config.queue)}`)
    console.log(
      `  1Flow:  ${config.oneflow.apiBaseUrl} (${config.oneflow.mode} mode, at most ${config.oneflow.maxRequestsPerSecond} requests/s per project)`
    )
    for (const s of config.sources) {
      const mappings = s.subscriptions
        ? `${s.subscriptions.length} custom mapping(s)`
        : 'the presets (track → Track Event, identify → Identify User)'
      console.log(`  source ${s.name}: project ${s.projectId}, ${mappings}`)
      const types = describeSource(s)
      const sent = types.filter((t) => t.sent)
      const skipped = types.filter((t) => !t.sent)
      console.log(`    sent: ${sent.map((t) => `${t.type} → ${t.detail}`).join('; ') || 'nothing'}`)
      if (skipped.length > 0) console.log(`    skipped: ${skipped.map((t) => `${t.type} (${t.detail})`).join(', ')}`)
      if (!sent.some((t) => t.type === 'identify'))
        console.log(
          `    warning: identify is not sent, so 1Flow never learns who your users are or their traits; add {"name": "Identify User", "subscribe": "type = \\"identify\\"", "partnerAction": "identifyUser"} to this source's mappings`
        )
      console.log(
        s.segment
          ? `    1Flow survey responses: POST http://${config.listen.host}:${config.listen.port}/webhooks/1flow/${s.name}/<webhookToken> → Segment ${s.segment.host}/v1/batch as "${s.segment.eventName}"`
          : `    1Flow survey responses: off (add "webhookToken" and "segment": {"writeKey": …} to send them to Segment)`
      )
    }
  })

/**
 * The queue an admin command reads: a SQLite file that is not there is a mistake in the config (a relay creates
 * it when it starts), said as such — never a new, empty queue reported as "no dead letters".
 */
async function openExistingQueue(config: RelayConfig): Promise<Queue> {
  if (config.queue.startsWith('sqlite:')) {
    const path = config.queue.slice('sqlite:'.length)
    if (!existsSync(path)) {
      console.error(`There is no queue at ${path}: check "queue" in the config (a relay creates it when it starts).`)
      process.exit(1)
    }
  }
  return openQueue(config)
}

/** A commander parser for a whole number within [min, max], refusing anything else with a message naming the option. */
const wholeNumber = (option: string, min: number, max: number) => (value: string) => {
  const n = Number(value)
  if (!/^\d+$/.test(value.trim()) || n < min || n > max)
    throw new InvalidArgumentError(`${option} takes a whole number from ${min} to ${max.toLocaleString('en-US')}`)
  return n
}

const ids = (value: string, previous: number[] = []) => {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('ids are positive whole numbers')
  return [...previous, n]
}
const selection = (opts: { id?: number[]; all?: boolean }): Selection => {
  if (opts.all) return 'all'
  if (!opts.id || opts.id.length === 0) {
    console.error('Say which dead letters: --id <n> (repeatable) or --all.')
    process.exit(1)
  }
  return opts.id
}

program
  .command('preview')
  .description(
    "what 1Flow would receive for events, from the config's mappings: the HTTP body and the web SDK call, or why not; sends nothing"
  )
  .option(...configOption)
  .option('--source <name>', 'the source whose mappings apply (default: the first)')
  .argument(
    '[file]',
    'events: one JSON event, a {"batch": […]} body, a JSON array, or NDJSON; "-" or none: standard input'
  )
  .action(async (file: string | undefined, opts: { config: string; source?: string }) => {
    const config = readConfig(opts.config, { queueOnly: true })
    const source = opts.source ? config.sources.find((s) => s.name === opts.source) : config.sources[0]
    if (!source) {
      console.error(`No source named "${opts.source}". Sources: ${config.sources.map((s) => s.name).join(', ')}`)
      process.exit(1)
    }
    const text = file && file !== '-' ? readFileSync(file, 'utf8') : readFileSync(0, 'utf8')
    let events: unknown[]
    try {
      events = parsePreviewInput(text)
    } catch (error) {
      if (!(error instanceof PreviewInputError)) throw error
      console.error(`Could not read the events: ${error.message}`)
      process.exit(1)
    }
    let sent = 0
    for (const result of previewEvents(events, source)) {
      if (result.sent.length > 0) sent++
      console.log(JSON.stringify(result))
    }
    console.error(
      `${events.length} event(s) for source ${source.name}: ${sent} sent, ${events.length - sent} not sent.`
    )
  })

program
  .command('import')
  .description(
    "historical events into the queue with their own timestamps (Segment's export format or Segment-spec NDJSON, gzipped or not); delivered at the relay's rate limit"
  )
  .option(...configOption)
  .option('--source <name>', 'the source the events belong to (default: the first)')
  .option('--dry-run', 'count what would be queued, skipped and rejected; write nothing')
  .option('--resume', 'continue an import of the same file that stopped part way')
  .argument('<file>', 'an NDJSON file (.gz or not), or "-" for standard input')
  .action(async (file: string, opts: { config: string; source?: string; dryRun?: boolean; resume?: boolean }) => {
    // The events go to the source's lane, named after its 1Flow project key: that key must be the real one (a dry
    // run queues nothing and needs none).
    const config = readConfig(opts.config, { queueOnly: opts.dryRun === true })
    const source = opts.source ? config.sources.find((s) => s.name === opts.source) : config.sources[0]
    if (!source) {
      console.error(`No source named "${opts.source}". Sources: ${config.sources.map((s) => s.name).join(', ')}`)
      process.exit(1)
    }
    const queue = opts.dryRun ? undefined : await openQueue(config)
    const started = Date.now()
    const tty = process.stderr.isTTY === true
    let shownAt = 0
    const show = (t: ImportTotals, read: number, total: number | undefined) => {
      if (!tty || Date.now() - shownAt < 250) return
      shownAt = Date.now()
      const seconds = (Date.now() - started) / 1000
      const rate = Math.round((t.queued + t.duplicates + t.rejected + t.skipped) / Math.max(seconds, 0.001))
      const eta = total && read > 0 ? ` ~${Math.round((seconds * (total - read)) / read)} s left` : ''
      const pct = total ? `${Math.floor((100 * read) / total)}% ` : ''
      process.stderr.write(`\r${pct}${t.lines} lines, ${rate} events/s${eta}   `)
    }
    try {
      const totals = await importEvents(queue, {
        file,
        source,
        ...(opts.dryRun && { dryRun: true }),
        ...(opts.resume && { resume: true }),
        progress: show
      })
      if (tty) process.stderr.write('\n')
      const seconds = ((Date.now() - started) / 1000).toFixed(1)
      console.log(
        opts.dryRun
          ? `Dry run of ${file} for source ${source.name}: ${totals.queued} would be sent to 1Flow, ${totals.skipped} accepted but not sent by the mappings, ${totals.rejected} rejected (${totals.lines} lines, ${seconds} s).`
          : `Imported ${file} for source ${source.name}: ${totals.queued} queued, ${totals.duplicates} already queued (same messageId), ${totals.rejected} rejected as dead letters (${totals.lines} lines, ${seconds} s).`
      )
    } catch (error) {
      if (!(error instanceof ImportError)) throw error
      console.error(error.message)
      process.exitCode = 1
    } finally {
      await queue?.close()
    }
  })

const dlq = program.command('dlq').description('inspect, replay or purge dead-lettered events')
/** Dead-letter filters shared by list and export: by source, by text in the reason, dead since a date. */
interface DeadFilter {
  readonly source?: string
  readonly reason?: string
  readonly since?: number
}
const isoDate = (value: string) => {
  const ms = Date.parse(value)
  if (Number.isNaN(ms)) throw new InvalidArgumentError('--since takes a date, e.g. 2026-12-01 or 2026-12-01T09:30:00Z')
  return ms
}
/** Dead letters matching `filter`, in id order, at most `limit`, read page by page. */
async function* deadLetters(queue: Queue, filter: DeadFilter, limit = Number.POSITIVE_INFINITY) {
  let found = 0
  for (let afterId = 0; found < limit;) {
    const page = await queue.listDead({ limit: 1000, afterId, ...(filter.source && { sourceName: filter.source }) })
    if (page.length === 0) return
    afterId = (page.at(-1) as { id: number }).id
    for (const dead of page) {
      if (filter.reason && !dead.reason.toLowerCase().includes(filter.reason.toLowerCase())) continue
      if (filter.since !== undefined && dead.deadAt < filter.since) continue
      yield dead
      if (++found >= limit) return
    }
  }
}
const filterOptions = (command: Command) =>
  command
    .option('--source <name>', 'only this source')
    .option(
      '--reason <text>',
      'only dead letters whose reason contains this text (any case), e.g. 400 or missing_identity'
    )
    .option('--since <date>', 'only those dead-lettered at or after this date (ISO-8601)', isoDate)

filterOptions(
  dlq
    .command('list')
    .description("dead letters as JSON lines (id, reason, status, 1Flow's answer, times), oldest first")
    .option(...configOption)
    .option('--limit <n>', 'how many (1 to 100,000)', wholeNumber('--limit', 1, 100_000), 100)
    .option('--body', 'include each event')
).action(async (opts: DeadFilter & { config: string; limit: number; body?: boolean }) => {
  const queue = await openExistingQueue(readConfig(opts.config, { queueOnly: true }))
  // Every time as ISO-8601, in one format.
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())
  let rows = 0
  for await (const { body, ...row } of deadLetters(queue, opts, opts.limit)) {
    rows++
    console.log(
      JSON.stringify({
        ...row,
        receivedAt: iso(row.receivedAt),
        firstAttemptAt: iso(row.firstAttemptAt),
        deadAt: iso(row.deadAt),
        ...(opts.body && { event: JSON.parse(body) })
      })
    )
  }
  if (rows === 0) console.error('No dead letters.')
  await queue.close()
})
filterOptions(
  dlq
    .command('export')
    .description('the events of dead letters as NDJSON on stdout: one Segment event per line, as `import` reads them')
    .option(...configOption)
).action(async (opts: DeadFilter & { config: string }) => {
  const queue = await openExistingQueue(readConfig(opts.config, { queueOnly: true }))
  let rows = 0
  for await (const dead of deadLetters(queue, opts)) {
    rows++
    process.stdout.write(`${dead.body}\n`)
  }
  console.error(`Exported ${rows} dead letter(s).`)
  await queue.close()
})
dlq
  .command('replay')
  .description('put dead letters back in the queue (attempts reset), each checked again as ingest would check it')
  .option(...configOption)
  .option('--id <n>', 'a dead letter id (repeatable)', ids)
  .option('--all', 'every dead letter')
  .option('--force', 'replay also the events ingest would refuse (no user id, nested too deep, …)')
  .option('--dry-run', 'say what would be replayed and refused; change nothing')
  .action(async (opts: { config: string; id?: number[]; all?: boolean; force?: boolean; dryRun?: boolean }) => {
    const chosen = selection(opts)
    const queue = await openExistingQueue(readConfig(opts.config, { queueOnly: true }))
    const wanted = chosen === 'all' ? undefined : new Set(chosen)
    const replay: number[] = []
    const refused: Array<{ id: number; code: string; error: string }> = []
    for (let afterId = 0; ;) {
      const page = await queue.listDead({ limit: 1000, afterId })
      if (page.length === 0) break
      afterId = (page.at(-1) as { id: number }).id
      for (const dead of page) {
        if (wanted && !wanted.has(dead.id)) continue
        const problem = recheckEvent(dead.body)
        if (problem && !opts.force)
          refused.push({ id: dead.id, code: problem.code, error: `the event ${problem.message}` })
        else replay.push(dead.id)
      }
    }
    const replayed = opts.dryRun ? replay.length : replay.length > 0 ? await queue.replayDead(replay, Date.now()) : 0
    console.log(
      opts.dryRun ? `Dry run: would replay ${replayed} dead letter(s).` : `Replaying ${replayed} dead letter(s).`
    )
    if (refused.length > 0) {
      console.error(
        `Not replayed: ${refused.length} dead letter(s) ingest would refuse (replay them anyway with --force):`
      )
      for (const r of refused.slice(0, 20)) console.error(`  - id ${r.id} (${r.code}): ${r.error}`)
      if (refused.length > 20) console.error(`  … and ${refused.length - 20} more`)
    }
    await queue.close()
    if (refused.length > 0 && replayed === 0) process.exitCode = 1
  })
dlq
  .command('purge')
  .description('delete dead letters for good')
  .option(...configOption)
  .option('--id <n>', 'a dead letter id (repeatable)', ids)
  .option('--all', 'every dead letter')
  .action(async (opts: { config: string; id?: number[]; all?: boolean }) => {
    const queue = await openExistingQueue(readConfig(opts.config, { queueOnly: true }))
    console.log(`Purged ${await queue.purgeDead(selection(opts))} dead letter(s).`)
    await queue.close()
  })

program
  .command('stats')
  .description('queue depth, retries, dead letters and the oldest event, as JSON')
  .option(...configOption)
  .action(async (opts: { config: string }) => {
    const config = readConfig(opts.config, { queueOnly: true })
    const queue = await openExistingQueue(config)
    const stats = await queue.stats(Date.now())
    // Lanes by the names /health and the metrics use; one whose credential is not in this shell keeps its id.
    const labels = laneLabels(config)
    const lanes = Object.fromEntries(Object.entries(stats.lanes).map(([id, n]) => [labels.get(id) ?? `lane ${id}`, n]))
    console.log(JSON.stringify({ ...stats, lanes }, null, 2))
    await queue.close()
  })

program.parseAsync().catch((error: Error) => {
  console.error(error.message)
  process.exit(1)
})
