import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pg from 'pg'
import { inject } from 'vitest'
import type { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { createLogger } from '../logger'
import { parseConfig } from '../config'
import { createRelay, type Relay, type RelayOptions } from '../relay'

export const WRITE_KEY = 'wk_test_0123456789'
export const PROJECT_KEY = 'test-project-key'

/** Log lines a relay wrote (parsed JSON), plus the raw text for secret scans. */
export class LogCapture extends Writable {
  readonly lines: string[] = []
  override _write(chunk: Buffer, _enc: string, done: () => void) {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean))
    done()
  }
  get text(): string {
    return this.lines.join('\n')
  }
  records(): Array<Record<string, unknown>> {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  }
}

export function tempDir(prefix = 'oneflow-relay-'): string {
  // In the run's own directory (global-setup.ts), deleted when the run ends.
  return mkdtempSync(join(inject('tmpRoot') ?? tmpdir(), prefix))
}

export interface TestRelay {
  readonly relay: Relay
  readonly url: string
  readonly logs: LogCapture
  stop(): Promise<void>
}

/** A relay on 127.0.0.1 with a fresh SQLite queue, delivering to `fake`. `raw` is merged into the config. */
export async function startRelay(
  fake: FakeOneFlowApi,
  raw: Record<string, unknown> = {},
  options: RelayOptions = {}
): Promise<TestRelay> {
  const logs = new LogCapture()
  const { oneflow, limits, ...rest } = raw as { oneflow?: Record<string, unknown>; limits?: Record<string, unknown> }
  const config = parseConfig({
    listen: { host: '127.0.0.1', port: 0 },
    queue: `sqlite:${join(tempDir(), 'relay.db')}`,
    sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }],
    ...rest,
    oneflow: { apiBaseUrl: fake.url, ...oneflow },
    // A small disk reserve: dozens of test relays need not write 16 MiB of zeros each.
    limits: { diskReserveBytes: 1024 * 1024, ...limits }
  })
  const relay = await createRelay(config, { logger: createLogger({ level: 'debug', destination: logs }), ...options })
  const url = await relay.start()
  return { relay, url, logs, stop: () => relay.stop() }
}

/** POSTs JSON to the relay with the write key as HTTP Basic (or none). */
export async function post(
  url: string,
  path: string,
  body: unknown,
  writeKey: string | null = WRITE_KEY
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (writeKey !== null) headers.authorization = `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
  const text = await res.text()
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, headers: res.headers }
}

/** Waits until `check` holds (polling), failing with `what` after `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** One statement on a connection of its own (what an operator or another relay would run); its rows. */
export async function sql(url: string, text: string): Promise<Array<Record<string, unknown>>> {
  const client = new pg.Client(url)
  // A connection the server ends (a test crashing it) fails the statement; unheard, its error would end the process.
  client.on('error', () => undefined)
  await client.connect()
  try {
    return (await client.query(text)).rows as Array<Record<string, unknown>>
  } finally {
    await client.end()
  }
}
