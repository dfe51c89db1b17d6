/**
 * relay-import: `oneflow-relay import` of a 1,000,000-event NDJSON file (Segment-spec tracks of 5,000 users, each
 * with its own timestamp and messageId) into a SQLite queue, as an operator runs it (the CLI, a fresh process).
 * `events_per_s`: events into the queue per second of the whole command; `peak_rss_mb`: the process's peak
 * resident memory (VmHWM, polled), which must stay flat whatever the file's size.
 */
import { spawn } from 'node:child_process'
import { createWriteStream, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { machine, repoRoot } from './_machine'

const EVENTS = Number(process.env.BENCH_IMPORT_EVENTS ?? 1_000_000)
const relayCli = createRequire(join(repoRoot(), 'bench', 'package.json'))
  .resolve('@oneflow-seg/relay/package.json')
  .replace(/package\.json$/, 'dist/cli.cjs')

const dir = mkdtempSync(join(tmpdir(), 'relay-import-'))
const file = join(dir, 'export.ndjson')
const out = createWriteStream(file)
const start = Date.UTC(2025, 0, 1)
for (let i = 0; i < EVENTS; i++) {
  const line = `${JSON.stringify({
    type: 'track',
    event: 'Historical Event',
    userId: `user-${i % 5000}`,
    messageId: `import-${i}`,
    timestamp: new Date(start + i * 1000).toISOString(),
    properties: { plan: 'pro', n: i }
  })}\n`
  if (!out.write(line)) await new Promise((r) => out.once('drain', r))
}
await new Promise((r) => out.end(r))
const config = join(dir, 'relay.json')
writeFileSync(
  config,
  JSON.stringify({
    queue: `sqlite:${join(dir, 'relay.db')}`,
    sources: [{ name: 'bench', writeKey: 'bench-write-key', projectApiKey: 'bench-project-key' }]
  })
)

const began = Date.now()
const child = spawn(process.execPath, [relayCli, 'import', '--config', config, file], {
  stdio: ['ignore', 'pipe', 'inherit']
})
let stdout = ''
child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
let peakKb = 0
const poll = setInterval(() => {
  try {
    const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))
    if (m) peakKb = Math.max(peakKb, Number(m[1]))
  } catch {
    // exited
  }
}, 50)
const code: number = await new Promise((r) => child.on('exit', (c) => r(c ?? 1)))
clearInterval(poll)
const seconds = (Date.now() - began) / 1000
if (code !== 0) throw new Error(`import exited ${code}: ${stdout}`)
const queued = Number(/(\d+) queued/.exec(stdout)?.[1])
console.log(JSON.stringify({ machine: machine(), events: EVENTS, seconds, summary: stdout.trim() }))
console.log(
  JSON.stringify({
    bench: 'relay-import',
    events_per_s: Math.round(queued / seconds),
    peak_rss_mb: Math.round(peakKb / 1024),
    events: queued
  })
)
