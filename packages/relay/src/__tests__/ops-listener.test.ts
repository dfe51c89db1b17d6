/**
 * The operator's endpoints: on a listener of their own when `listen.ops` is set (so a deployment that exposes
 * ingest to browsers keeps health, metrics and the status page private), and never a load on the queue however
 * many clients poll them.
 */
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import type { ConfigError } from '../config'
import { SqliteQueue } from '../queue/sqlite-queue'
import { post, startRelay, tempDir, until } from './helpers'

let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
})
afterAll(async () => {
  await fake.close()
})

describe('listen.ops', () => {
  it('serves health, metrics and the status page on its own port, and nowhere else', async () => {
    const relay = await startRelay(fake, {
      listen: { host: '127.0.0.1', port: 0, ops: { port: 0 } },
      statusPage: { enabled: true }
    })
    try {
      const ops = relay.relay.opsUrl as string
      expect(ops).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
      expect(ops).not.toBe(relay.url)
      for (const path of ['/health', '/health/live', '/health/ready', '/metrics', '/status', '/status/data']) {
        expect((await fetch(`${relay.url}${path}`)).status, `ingest ${path}`).toBe(404)
        expect((await fetch(`${ops}${path}`)).status, `ops ${path}`).toBe(200)
      }
      expect((await post(relay.url, '/v1/track', { userId: 'u', event: 'Via ingest' })).status).toBe(200)
      await until(() => fake.accepted.length === 1, 'the event at 1Flow')
      expect(await (await fetch(`${ops}/metrics`)).text()).toMatch(
        /relay_ingest_requests_total\{route="track",status="200"\} 1/
      )
      // Ingest routes are not on the ops listener.
      expect((await post(ops, '/v1/track', { userId: 'u', event: 'Via ops' })).status).toBe(404)
    } finally {
      await relay.stop()
    }
  })

  it('refuses a listen.ops that is not an object, lacks a port, or reuses the ingest port', async () => {
    const { parseConfig } = await import('../config')
    const problems = (listen: unknown) => {
      try {
        parseConfig({ listen, sources: [{ writeKey: 'w', projectApiKey: 'p' }] })
        return []
      } catch (error) {
        return (error as ConfigError).problems.map((p) => p.key)
      }
    }
    expect(problems({ ops: 9090 })).toEqual(['listen.ops'])
    expect(problems({ ops: { host: '127.0.0.1' } })).toEqual(['listen.ops.port'])
    expect(problems({ port: 8787, ops: { port: 8787 } })).toEqual(['listen.ops.port'])
    expect(problems({ ops: { port: 9090, bind: 'x' } })).toEqual(['listen.ops.bind'])
    expect(problems({ ops: { port: 9090 } })).toEqual([])
  })
})

describe('polling the ops endpoints', () => {
  it('200 clients polling /health and /metrics at once cost the queue a read of its figures per second, not per request', async () => {
    const queue = new SqliteQueue(join(tempDir(), 'relay.db'))
    let reads = 0
    const stats = queue.stats.bind(queue)
    queue.stats = async (now) => {
      reads++
      return stats(now)
    }
    const relay = await startRelay(fake, {}, { queue })
    try {
      await new Promise((r) => setTimeout(r, 50))
      const before = reads
      const answers = await Promise.all(
        Array.from({ length: 200 }, (_, i) => fetch(`${relay.url}${i % 2 ? '/health' : '/metrics'}`))
      )
      for (const a of answers) expect(a.status).toBe(200)
      // One read serves every request within a second of it (a loaded machine may need a few seconds for 200).
      expect(reads - before).toBeLessThanOrEqual(5)
    } finally {
      await relay.stop()
    }
  })
})
