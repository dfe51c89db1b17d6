import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeOneFlowApi, loadFixtures } from '@oneflow-seg/testkit'
import { buildRequest, mapWithPresets, packBatches, resolveSettings, type Command } from '../index'

// The contract in core and testkit's stand-in for 1Flow must agree, or every adapter test proves nothing.
let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
})
afterAll(() => fake.close())

describe('core HTTP contract against the fake 1Flow API over real HTTP', () => {
  it('accepts every request core builds for the preset fixtures, and records the messages', async () => {
    const target = resolveSettings({ projectApiKey: 'test-project-key', apiBaseUrl: fake.url })
    const commands = loadFixtures({ dates: 'string' })
      .filter((f) => !f.subscriptions && !f.expect.configError)
      .flatMap((f) => mapWithPresets(f.event).map((r) => r.outcome))
      .filter((o): o is Command => o.kind === 'identify' || o.kind === 'track')
      .filter((c) => JSON.stringify(c).length < 32_000)
    expect(commands.length).toBeGreaterThan(20)
    for (const cmd of commands) {
      const req = buildRequest(cmd, target)
      const res = await fetch(req.url, { method: req.method, headers: req.headers, body: req.body })
      expect(res.status, req.body.slice(0, 200)).toBe(200)
    }
    const { batches } = packBatches(commands, target)
    for (const b of batches)
      expect(
        (await fetch(b.request.url, { method: 'POST', headers: b.request.headers, body: b.request.body })).status
      ).toBe(200)
    expect(fake.accepted).toHaveLength(commands.length * 2)
    expect(fake.accepted.filter((m) => m.via === '/batch').map((m) => m.type)).toEqual(commands.map((c) => c.kind))
  })
})
