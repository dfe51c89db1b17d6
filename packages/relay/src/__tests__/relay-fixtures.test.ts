/**
 * Every conformance fixture through the relay over HTTP (Segment's Tracking API in, the fake 1Flow API
 * out), in batch mode and in single mode. Each fixture gets its own source: its write key, its mappings
 * and its own 1Flow project key, so what the fake received can be told apart.
 */
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { expectedOutcome, FakeOneFlowApi, loadFixtures, type Fixture } from '@oneflow-seg/testkit'
import { createDatabase } from '@oneflow-seg/testkit/postgres'
import { createLogger } from '../logger'
import { ConfigError, parseConfig } from '../config'
import { createRelay, type Relay } from '../relay'
import { LogCapture, post, tempDir, until } from './helpers'

const fixtures = loadFixtures({ dates: 'string' })
const runnable = fixtures.filter((f) => !f.expect.configError)
const keyOf = (i: number) => `project-${i}`
const writeKeyOf = (i: number) => `wk-${i}`
const ingestRefused = (f: Fixture) => /refuses events over 32 KB at ingest/.test(f.adapters?.relay ?? '')
const ingestRejected = (f: Fixture) => /rejects this event at ingest \((\w+)\)/.exec(f.adapters?.relay ?? '')?.[1]

describe.each([
  ['batch', 'sqlite'],
  ['single', 'sqlite'],
  ['batch', 'postgres']
] as const)('relay in %s mode on %s: every conformance fixture', (mode, queueKind) => {
  let fake: FakeOneFlowApi
  let relay: Relay
  let url: string
  const answers = new Map<string, { status: number; body: Record<string, unknown> }>()

  beforeAll(async () => {
    fake = await FakeOneFlowApi.start({ apiKeys: runnable.map((_, i) => keyOf(i)) })
    const config = parseConfig({
      listen: { host: '127.0.0.1', port: 0 },
      queue:
        queueKind === 'sqlite'
          ? `sqlite:${join(tempDir(), 'relay.db')}`
          : await createDatabase(inject('pgAdminUrl'), `fixtures_${process.pid}_${mode}`),
      oneflow: { apiBaseUrl: fake.url, mode },
      sources: runnable.map((f, i) => ({
        name: `f${i}`,
        writeKey: writeKeyOf(i),
        projectApiKey: keyOf(i),
        ...(f.subscriptions && { mappings: f.subscriptions }),
        ...(f.settings?.consentCategories !== undefined && { consentCategories: f.settings.consentCategories })
      }))
    })
    relay = await createRelay(config, { logger: createLogger({ destination: new LogCapture() }) })
    url = await relay.start()
    // Every event goes through the public API, then the queue drains.
    for (const [i, f] of runnable.entries()) {
      const { status, body } = await post(url, `/v1/${String(f.event.type)}`, f.event, writeKeyOf(i))
      answers.set(f.name, { status, body })
    }
    await until(
      async () => {
        const s = await relay.queue.stats(Date.now())
        return s.pending + s.leased === 0
      },
      'the queue to drain',
      20_000
    )
  }, 40_000)

  afterAll(async () => {
    await relay?.stop()
    await fake?.close()
  })

  it.each(runnable.map((f, i) => [f.name, f, i] as const))('%s', async (_name, fixture, i) => {
    const received = fake.accepted.filter((m) => m.apiKey === keyOf(i))
    expect(received.every((m) => m.via === (mode === 'batch' ? '/batch' : `/${m.type}`))).toBe(true)
    if (ingestRefused(fixture)) {
      expect(answers.get(fixture.name)?.status).toBe(400)
      expect(received).toEqual([])
      return
    }
    const rejectedCode = ingestRejected(fixture)
    if (rejectedCode) {
      expect(answers.get(fixture.name)).toEqual({
        status: 200,
        body: { success: true, rejected: [{ index: 0, code: rejectedCode, error: expect.any(String) }] }
      })
      expect(received).toEqual([])
      const dead = await relay.queue.listDead({ sourceName: `f${i}` })
      expect(dead.map((d) => [d.reason, JSON.parse(d.body)])).toEqual([
        [expect.stringMatching(`^rejected at ingest \\(${rejectedCode}\\)`), fixture.event]
      ])
      return
    }
    expect(answers.get(fixture.name)?.status).toBe(200)
    const expected = expectedOutcome(fixture).calls.map((c) => c.http)
    const got = received.map((m) => ({ path: `/${m.type}`, body: m.body }))
    if (/stamps timestamp = receivedAt/.test(fixture.adapters?.relay ?? '')) {
      expect(got.map((g) => ({ ...g, body: { ...g.body, timestamp: undefined } }))).toEqual(
        expected.map((e) => ({ ...e, body: { ...('body' in e ? e.body : {}), timestamp: undefined } }))
      )
      for (const g of got) expect(Date.parse(String(g.body.timestamp))).toBeGreaterThan(Date.parse('2026-01-01'))
    } else {
      expect(got).toEqual(expected)
    }
    const dead = await relay.queue.listDead({ sourceName: `f${i}` })
    const invalid = expectedOutcome(fixture).invalid
    expect(dead.map((d) => d.reason)).toEqual(invalid.map(() => expect.stringContaining(`"${invalid[0]?.field}"`)))
  })
})

describe('configuration errors from the fixtures', () => {
  it.each(fixtures.filter((f) => f.expect.configError).map((f) => [f.name, f] as const))(
    '%s is refused by the relay config, naming the mapping',
    (_name, fixture) => {
      let error: unknown
      try {
        parseConfig({ sources: [{ writeKey: 'wk', projectApiKey: 'pk', mappings: fixture.subscriptions }] })
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(ConfigError)
      const message = (error as ConfigError).message
      expect(message).toMatch(/^sources\[0\]\.mappings/m)
      for (const text of fixture.expect.configError!.includes) expect(message).toContain(text)
    }
  )
})
