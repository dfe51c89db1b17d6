/**
 * The relay as a process in an environment that fails under it: standard output on a full disk or closed.
 * It keeps taking and delivering events, and says what it could not write in a metric.
 */
import { execFileSync } from 'node:child_process'
import { statfsSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { startThrowawayPostgres } from '@oneflow-seg/testkit/postgres'
import { post, tempDir, until } from './helpers'
import { freePort, startRelayProcess, writeConfig, type RelayProcess } from './process'

const WRITE_KEY = 'wk_env_faults_0123'

let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
})
afterAll(async () => {
  await fake.close()
})

describe('logging never ends the process', () => {
  const metric = async (relay: RelayProcess) =>
    Number(/relay_log_write_errors_total (\d+)/.exec(await (await fetch(`${relay.url}/metrics`)).text())?.[1] ?? 'NaN')

  it.each([
    ['on a full disk (/dev/full: every write fails with ENOSPC)', 'exec "$0" "$@" >/dev/full'],
    // A pipe whose reader has gone (it exits at once): every write fails with EPIPE.
    ['a pipe nobody reads any more (EPIPE)', 'exec "$0" "$@" > >(exit 0)']
  ])(
    'standard output %s: warnings are dropped and counted, events still delivered',
    async (_what, shell) => {
      fake.reset()
      const port = await freePort()
      const file = writeConfig(
        {
          listen: { host: '127.0.0.1', port },
          queue: 'sqlite:./relay.db',
          oneflow: { apiBaseUrl: fake.url },
          sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: 'test-project-key' }]
        },
        tempDir()
      )
      // Liveness is polled over HTTP, so the relay needs no working stdout to be seen starting.
      const relay = await startRelayProcess(file, port, {}, (command, args) => [
        'bash',
        ['-c', shell, command, ...args]
      ])
      try {
        // A client can cause a warning at will: a batch with a rejected event logs one line.
        for (let i = 0; i < 5; i++) {
          const res = await post(
            relay.url,
            '/v1/batch',
            { batch: [{ type: 'track', userId: `u${i}`, event: 'Kept' }, { type: 'nope' }] },
            WRITE_KEY
          )
          expect(res.status).toBe(200)
        }
        await until(() => fake.accepted.length === 5, 'the five good events at 1Flow')
        expect(await metric(relay)).toBeGreaterThanOrEqual(5)
        expect(relay.child.exitCode).toBeNull()
        expect((await fetch(`${relay.url}/health/ready`)).status).toBe(200)
      } finally {
        relay.child.kill('SIGTERM')
        expect(await relay.exited).toBe(0)
      }
    },
    60_000
  )
})

describe('a PostgreSQL queue that is not up yet', () => {
  it('the relay starts anyway, answers 503 (ready and ingest) while it waits, and takes events once PostgreSQL answers', async () => {
    fake.reset()
    const pg = await startThrowawayPostgres()
    pg.crash()
    const port = await freePort()
    const file = writeConfig({
      listen: { host: '127.0.0.1', port },
      queue: pg.url,
      oneflow: { apiBaseUrl: fake.url },
      sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: 'test-project-key' }]
    })
    const relay = await startRelayProcess(file, port)
    try {
      const ready = await fetch(`${relay.url}/health/ready`)
      expect(ready.status).toBe(503)
      const refused = await post(relay.url, '/v1/track', { userId: 'u', event: 'Early' }, WRITE_KEY)
      expect(refused.status).toBe(503)
      expect(refused.headers.get('retry-after')).toBe('5')
      expect(relay.output()).not.toMatch(/not a usable config|INVALID_CONFIG/)
      pg.restart()
      await until(
        async () => (await fetch(`${relay.url}/health/ready`)).status === 200,
        'ready once PostgreSQL is up',
        40_000
      )
      expect((await post(relay.url, '/v1/track', { userId: 'u', event: 'Later' }, WRITE_KEY)).status).toBe(200)
      await until(() => fake.accepted.some((m) => m.body.event === 'Later'), 'the event at 1Flow')
      // One line when it started failing, one when it recovered: not one per attempt.
      expect(relay.output().match(/the queue is failing/g)).toHaveLength(1)
      expect(relay.output()).toMatch(/the queue takes writes again/)
    } finally {
      relay.child.kill('SIGTERM')
      await relay.exited
      pg.stop()
    }
  }, 90_000)
})

describe('a disk the queue fills to the last byte', () => {
  it('recovers by itself once 1Flow answers: every acknowledged event delivered, ingest 200 again, no restart', async () => {
    // A 40 MiB file system of its own (tmpfs; the tests run as root, as CI does).
    const mount = tempDir('oneflow-full-disk-')
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', mount])
    const reserveBytes = 4 * 1024 * 1024
    fake.reset()
    fake.inject({ kind: 'status', status: 503, times: Number.MAX_SAFE_INTEGER })
    const port = await freePort()
    const file = writeConfig({
      listen: { host: '127.0.0.1', port },
      queue: `sqlite:${join(mount, 'relay.db')}`,
      oneflow: { apiBaseUrl: fake.url },
      // The disk fills long before the cap would stop ingest.
      limits: { diskCapBytes: 1024 ** 4, diskReserveBytes: reserveBytes },
      sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: 'test-project-key' }]
    })
    const relay = await startRelayProcess(file, port)
    const free = () => {
      const fs = statfsSync(mount)
      return fs.bavail * fs.bsize
    }
    try {
      // 1Flow is down; clients send until the disk is full and the relay refuses.
      const acked: string[] = []
      let refused: { status: number; body: Record<string, unknown> } | undefined
      for (let b = 0; b < 2000 && !refused; b++) {
        const ids = Array.from({ length: 100 }, (_, i) => `full-${b}-${i}`)
        const res = await post(
          relay.url,
          '/v1/batch',
          {
            batch: ids.map((id) => ({
              type: 'track',
              event: 'Fill',
              userId: `user-${id}`,
              messageId: id,
              properties: { id, pad: 'p'.repeat(1000) }
            }))
          },
          WRITE_KEY
        )
        if (res.status === 200) acked.push(...ids)
        else refused = res
      }
      expect(refused?.status).toBe(503)
      expect(acked.length).toBeGreaterThan(10_000)
      // What is free now is the reserve the relay just gave up, and no more than a page or so besides.
      expect(free()).toBeLessThan(reserveBytes + 1024 * 1024)
      const stillRefused = await post(relay.url, '/v1/track', { userId: 'u', event: 'While full' }, WRITE_KEY)
      expect(stillRefused.status).toBe(503)
      expect(stillRefused.body.code).toBe('queue_full')

      // 1Flow answers again: nobody frees anything, nothing restarts.
      fake.reset()
      await until(
        () => {
          const seen = new Set(fake.accepted.map((m) => String((m.body.properties as { id?: string }).id)))
          return acked.every((id) => seen.has(id))
        },
        `all ${acked.length} acknowledged events at 1Flow`,
        120_000
      )
      await until(
        async () => (await post(relay.url, '/v1/track', { userId: 'u', event: 'After' }, WRITE_KEY)).status === 200,
        'ingest to accept again',
        120_000
      )
      expect(relay.child.exitCode).toBeNull()
      // Said once per change of state: full, then room again. On a loaded machine delivery's own writes may fill
      // the disk once more while it drains (the reserve is back by then): each change is still said once, never
      // the same line twice in a row, and it ends with room.
      const changes = relay.output().match(/the disk holding the queue (is full|has room again)/g) ?? []
      expect(changes.length % 2).toBe(0)
      expect(changes.length).toBeLessThanOrEqual(6)
      changes.forEach((line, i) => expect(line, `line ${i}`).toMatch(i % 2 === 0 ? /is full$/ : /has room again$/))
    } finally {
      relay.child.kill('SIGKILL')
      await relay.exited
      execFileSync('umount', ['-l', mount])
    }
  }, 300_000)
})
