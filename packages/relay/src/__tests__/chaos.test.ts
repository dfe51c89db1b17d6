/**
 * Faults nobody asked for, on the built CLI as users run it: the queue's database crashing mid-delivery and
 * coming back, a database that stops answering without refusing, a disk that fills up. The relay stays up,
 * answers 503 meanwhile (and says so once in its log), recovers by itself, and every acknowledged event
 * reaches 1Flow.
 */
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { createDatabase, startThrowawayPostgres, type ThrowawayPostgres } from '@oneflow-seg/testkit/postgres'
import { FreezableProxy } from './freezable-proxy'
import { post, tempDir, until } from './helpers'
import { freePort, startRelayProcess, writeConfig, type RelayProcess, type Wrap } from './process'

const WRITE_KEY = 'wk_chaos_0123'
const PROJECT_KEY = 'test-project-key'

let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
})
afterAll(() => fake.close())

/** Sends batches of `size` events; returns the ids the relay acknowledged (200) and the statuses it answered. */
async function sendBatches(url: string, tag: string, batches: number, size = 20, extra: Record<string, unknown> = {}) {
  const acked: string[] = []
  const statuses: number[] = []
  for (let b = 0; b < batches; b++) {
    const ids = Array.from({ length: size }, (_, i) => `${tag}-${b}-${i}`)
    const res = await post(
      url,
      '/v1/batch',
      {
        batch: ids.map((id) => ({
          type: 'track',
          event: 'Chaos',
          userId: `user-${id}`,
          messageId: id,
          properties: { id, ...extra }
        }))
      },
      WRITE_KEY
    ).catch(() => ({ status: 0 }))
    statuses.push(res.status)
    if (res.status === 200) acked.push(...ids)
  }
  return { acked, statuses }
}

const deliveredIds = () =>
  new Set(fake.accepted.map((m) => String((m.body.properties as { id?: string } | undefined)?.id)))
const allDelivered = (ids: readonly string[]) =>
  until(
    () => {
      const seen = deliveredIds()
      return ids.every((id) => seen.has(id))
    },
    `all ${ids.length} acknowledged events at 1Flow`,
    60_000
  )
const countLines = (text: string, needle: string) => text.split('\n').filter((l) => l.includes(needle)).length

async function stop(relay: RelayProcess): Promise<number | string> {
  relay.child.kill('SIGTERM')
  return relay.exited
}

describe('PostgreSQL crashes mid-delivery and comes back', () => {
  let pg: ThrowawayPostgres
  beforeAll(async () => {
    pg = await startThrowawayPostgres()
  }, 60_000)
  afterAll(() => pg?.stop())

  it('stays up, answers 503 meanwhile, recovers by itself, and delivers every acknowledged event', async () => {
    fake.reset()
    fake.setLatency(300)
    const port = await freePort()
    const file = writeConfig({
      listen: { host: '127.0.0.1', port },
      queue: await createDatabase(pg.url, 'chaos_crash'),
      oneflow: { apiBaseUrl: fake.url, requestTimeoutMs: 3000 },
      sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }]
    })
    const relay = await startRelayProcess(file, port)
    const before = await sendBatches(relay.url, 'before', 10)
    expect(before.statuses.every((s) => s === 200)).toBe(true)
    await until(() => fake.inFlight > 0, 'a delivery in flight')

    pg.crash()
    // Ingest answers 503 with Retry-After (after at most one timeout), readiness too; the process lives.
    let outage: { status: number; headers: Headers } = { status: 200, headers: new Headers() }
    await until(
      async () => {
        outage = await post(
          relay.url,
          '/v1/batch',
          { batch: [{ type: 'track', event: 'During', userId: 'u' }] },
          WRITE_KEY
        )
        return outage.status === 503
      },
      'a 503 while the database is down',
      20_000
    )
    expect(outage.headers.get('retry-after')).toBe('5')
    expect((await fetch(`${relay.url}/health/ready`)).status).toBe(503)
    await new Promise((r) => setTimeout(r, 2_000))
    expect(relay.child.exitCode).toBeNull()

    pg.restart()
    await until(
      async () =>
        (
          await post(
            relay.url,
            '/v1/batch',
            { batch: [{ type: 'track', event: 'Probe', userId: 'u', properties: { id: 'probe' } }] },
            WRITE_KEY
          )
        ).status === 200,
      'ingest to accept again',
      20_000
    )
    expect((await fetch(`${relay.url}/health/ready`)).status).toBe(200)
    const after = await sendBatches(relay.url, 'after', 5)
    expect(after.statuses.every((s) => s === 200)).toBe(true)
    fake.setLatency(0)
    await allDelivered([...before.acked, ...after.acked])

    expect(await stop(relay)).toBe(0)
    const log = relay.output()
    // One line when it started failing, one when it recovered: not one per failed call.
    expect(countLines(log, 'the queue is failing')).toBe(1)
    expect(countLines(log, 'the queue takes writes again')).toBe(1)
    expect(log).not.toMatch(/unhandled|UnhandledPromiseRejection/i)
  }, 120_000)
})

describe('the database stops answering without refusing', () => {
  it('answers 503 within seconds instead of hanging, then fast; recovers when the path heals', async () => {
    fake.reset()
    const url = new URL(await createDatabase(inject('pgAdminUrl'), `chaos_frozen_${process.pid}`))
    const proxy = await FreezableProxy.start(Number(url.port))
    url.port = String(proxy.port)
    const port = await freePort()
    const file = writeConfig({
      listen: { host: '127.0.0.1', port },
      queue: url.toString(),
      oneflow: { apiBaseUrl: fake.url },
      sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }]
    })
    const relay = await startRelayProcess(file, port)
    try {
      const before = await sendBatches(relay.url, 'unfrozen', 3)
      expect(before.statuses.every((s) => s === 200)).toBe(true)

      proxy.freeze()
      const started = Date.now()
      const first = await post(
        relay.url,
        '/v1/batch',
        { batch: [{ type: 'track', event: 'Frozen', userId: 'u' }] },
        WRITE_KEY
      )
      expect(first.status).toBe(503)
      // Bounded by the database timeouts (5 s, 6 s read), not by the client's patience.
      expect(Date.now() - started).toBeLessThan(15_000)
      const fast = Date.now()
      expect(
        (await post(relay.url, '/v1/batch', { batch: [{ type: 'track', event: 'Frozen', userId: 'u' }] }, WRITE_KEY))
          .status
      ).toBe(503)
      expect(Date.now() - fast).toBeLessThan(1_000)
      expect((await fetch(`${relay.url}/health/ready`)).status).toBe(503)
      expect(relay.child.exitCode).toBeNull()

      proxy.thaw()
      await until(
        async () =>
          (
            await post(
              relay.url,
              '/v1/batch',
              { batch: [{ type: 'track', event: 'Thawed', userId: 'u', properties: { id: 'thawed' } }] },
              WRITE_KEY
            )
          ).status === 200,
        'ingest to accept again',
        30_000
      )
      const after = await sendBatches(relay.url, 'thawed', 3)
      await allDelivered([...before.acked, ...after.acked])
      expect(await stop(relay)).toBe(0)
      expect(countLines(relay.output(), 'the queue is failing')).toBe(1)
    } finally {
      relay.child.kill('SIGKILL')
      await proxy.close()
    }
  }, 120_000)
})

describe('SQLite on a disk that fills up', () => {
  it('answers 503 when the disk is full, keeps what it acknowledged, and takes events again once space returns', async () => {
    fake.reset()
    // 1Flow is down (back in a second, it says), so the queue only grows.
    fake.inject({ kind: 'status', status: 503, retryAfter: '1', times: 1_000_000 })
    const dir = tempDir()
    const disk = join(dir, 'disk')
    const freeSpace = join(dir, 'free-space-now')
    const port = await freePort()
    const file = writeConfig(
      {
        listen: { host: '127.0.0.1', port },
        queue: `sqlite:${join(disk, 'relay.db')}`,
        oneflow: { apiBaseUrl: fake.url },
        sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }]
      },
      dir
    )
    // A 24 MB disk of the relay's own (a tmpfs in a private mount namespace: nothing to clean up), an 8 MB
    // ballast on it, and a watcher that deletes the ballast when the test says space has returned.
    const isRoot = process.getuid?.() === 0
    const wrap: Wrap = (command, args) => [
      'unshare',
      [
        ...(isRoot ? ['-m'] : ['-r', '-m']),
        'sh',
        '-c',
        `mkdir -p "$1" && mount -t tmpfs -o size=24m tmpfs "$1" && dd if=/dev/zero of="$1/ballast" bs=1k count=8192 2>/dev/null &&
         (while [ ! -e "$2" ]; do sleep 0.2; done; rm -f "$1/ballast") & shift 2; exec "$@"`,
        'relay-on-small-disk',
        disk,
        freeSpace,
        command,
        ...args
      ]
    ]
    expect(
      spawnSync('unshare', [...(isRoot ? ['-m'] : ['-r', '-m']), 'true']).status,
      'unshare (util-linux) must be able to make a mount namespace'
    ).toBe(0)
    const relay = await startRelayProcess(file, port, {}, wrap)
    try {
      const acked: string[] = []
      let full: { status: number; body: Record<string, unknown> } | undefined
      for (let b = 0; b < 3000 && !full; b++) {
        const sent = await sendBatches(relay.url, `fill${b}`, 1, 20, { blob: 'x'.repeat(1500) })
        acked.push(...sent.acked)
        if (sent.statuses[0] !== 200) full = { status: sent.statuses[0] as number, body: {} }
      }
      expect(full?.status).toBe(503)
      expect(acked.length).toBeGreaterThan(100)
      expect((await fetch(`${relay.url}/health/ready`)).status).toBe(503)
      expect(relay.child.exitCode).toBeNull()

      writeFileSync(freeSpace, '')
      await until(
        async () =>
          (
            await post(
              relay.url,
              '/v1/batch',
              { batch: [{ type: 'track', event: 'Space', userId: 'u', properties: { id: 'space' } }] },
              WRITE_KEY
            )
          ).status === 200,
        'ingest to accept again',
        20_000
      ).catch((error: Error) => {
        throw new Error(`${error.message}\n${relay.output().slice(-2000)}`)
      })
      fake.reset()
      await allDelivered(acked).catch(async (error: Error) => {
        const health = await (await fetch(`${relay.url}/health`)).text().catch(() => '(no answer)')
        throw new Error(
          `${error.message}; /health: ${health}; ${deliveredIds().size} delivered, ${fake.requests.length} requests (${fake.requests.map((r) => r.status).join(',')})\n${relay.output().slice(-3000)}`
        )
      })
      expect(await stop(relay)).toBe(0)
      const log = relay.output()
      // One line when the disk filled (its reserve released), one when there was room again; a queue call that
      // failed on the way is said once at most.
      expect(countLines(log, 'the disk holding the queue is full')).toBe(1)
      expect(countLines(log, 'the disk holding the queue has room again')).toBe(1)
      expect(countLines(log, 'the queue is failing')).toBeLessThanOrEqual(1)
    } finally {
      relay.child.kill('SIGKILL')
    }
  }, 120_000)
})
