/**
 * kill -9 under load, five times: every event the relay acknowledged (200) reaches 1Flow. Duplicates are
 * allowed (batches in flight at a kill are sent again); losses are not.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { post, tempDir, until } from './helpers'
import { freePort, startRelayProcess, writeConfig, type RelayProcess } from './process'

const WRITE_KEY = 'wk_crash'
const KILLS = 5

let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
  // A little latency keeps deliveries in flight when the kill lands.
  fake.setLatency(15)
})
afterAll(() => fake.close())

it(`loses no acknowledged event across ${KILLS} kill -9s under load`, async () => {
  const port = await freePort()
  const file = writeConfig(
    {
      listen: { host: '127.0.0.1', port },
      queue: 'sqlite:./relay.db',
      oneflow: { apiBaseUrl: fake.url, maxRequestsPerSecond: 200 },
      sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: 'test-project-key' }]
    },
    tempDir()
  )
  const acked = new Set<string>()
  let relay: RelayProcess = await startRelayProcess(file, port)
  let seq = 0
  let loading = true

  // Load: 4 senders, batches of 10 events, each event carrying its id in its properties.
  const sender = async (n: number) => {
    while (loading) {
      const ids = Array.from({ length: 10 }, () => `s${n}-${seq++}`)
      const batch = ids.map((id) => ({
        type: 'track',
        event: 'Load',
        userId: `user-${id}`,
        messageId: id,
        properties: { id }
      }))
      const res = await post(relay.url, '/v1/batch', { batch }, WRITE_KEY).catch(() => undefined)
      if (res?.status === 200) ids.forEach((id) => acked.add(id))
      else await new Promise((r) => setTimeout(r, 20))
    }
  }
  const senders = [0, 1, 2, 3].map(sender)

  for (let kill = 0; kill < KILLS; kill++) {
    await new Promise((r) => setTimeout(r, 300 + Math.random() * 500))
    relay.child.kill('SIGKILL')
    expect(await relay.exited).toBe('SIGKILL')
    relay = await startRelayProcess(file, port)
  }
  loading = false
  await Promise.all(senders)

  const delivered = () => new Set(fake.accepted.map((m) => String((m.body.properties as { id: string }).id)))
  await until(
    () => {
      const seen = delivered()
      return [...acked].every((id) => seen.has(id))
    },
    `every acknowledged event at 1Flow (${acked.size} acknowledged)`,
    60_000
  )
  relay.child.kill('SIGTERM')
  await relay.exited
  expect(acked.size).toBeGreaterThan(200)
  const seen = delivered()
  const missing = [...acked].filter((id) => !seen.has(id))
  expect(missing).toEqual([])
}, 120_000)
