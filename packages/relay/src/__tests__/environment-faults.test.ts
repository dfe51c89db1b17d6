/**
 * The relay as a process in an environment that fails under it: standard output on a full disk or closed.
 * It keeps taking and delivering events, and says what it could not write in a metric.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
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
