/**
 * "1Flow Cloud (Actions)" through actions-core's own runtime — Destination.onEvent / onBatch with
 * subscriptions (the FQL path Segment uses) and createTestIntegration — against testkit's fake 1Flow API
 * over real HTTP on 127.0.0.1.
 */
import { createTestIntegration, Destination } from '@segment/actions-core'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { actions, cloudSettings, defaultMapping, isActionKey, presets } from '@oneflow-seg/core'
import {
  expectedConfigError,
  expectedOutcome,
  FakeOneFlowApi,
  fixtureSettings,
  loadFixtures,
  type Fixture
} from '@oneflow-seg/testkit'
import { destination } from '../index'

let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
})
afterAll(() => fake.close())
beforeEach(() => fake.reset())

const fixtures = loadFixtures({ dates: 'string' })

// Segment stores subscriptions with full mappings; fill in what fixtures leave out.
function subscriptionsFor(fixture: Fixture) {
  type Sub = { name?: string; subscribe: string; partnerAction: string; mapping?: unknown; enabled?: boolean }
  return ((fixture.subscriptions ?? presets) as readonly Sub[])
    .filter((s) => s.enabled !== false)
    .map((s) => ({
      name: s.name ?? s.partnerAction,
      subscribe: s.subscribe,
      partnerAction: s.partnerAction,
      mapping: s.mapping ?? (isActionKey(s.partnerAction) ? defaultMapping(actions[s.partnerAction].fields) : {})
    }))
}

// The fake's URL, unless the fixture's own apiBaseUrl is what cloud mode must refuse.
const settingsFor = (fixture: Fixture) =>
  expectedConfigError(fixture, 'cloud-mode')
    ? fixtureSettings(fixture)
    : { ...fixtureSettings(fixture), apiBaseUrl: fake.url }

/** A settings error cloud mode must give for this fixture (its settings, not its mappings). */
const refusedSettings = (fixture: Fixture) =>
  fixture.expect.configError ? undefined : expectedConfigError(fixture, 'cloud-mode')

/**
 * Checks a thrown error or a batch entry against the fixture's settings error, nothing sent: core's error (its
 * code, naming the setting's key), or actions-core's check of the settings schema, which runs first and names the
 * setting by its label ("1Flow HTTP API base URL").
 */
function expectRefused(fixture: Fixture, error: { message?: string; code?: string; name?: string } | undefined) {
  const refused = refusedSettings(fixture)!
  expect(error).toBeDefined()
  if (error?.name === 'AggregateAjvError') {
    const labels = refused.includes.map(
      (key) => (cloudSettings as Record<string, { label: string }>)[key]?.label ?? key
    )
    for (const label of labels) expect(error.message).toContain(label)
  } else {
    expect(error?.code).toBe(refused.code)
    for (const text of refused.includes) expect(error?.message).toContain(text)
  }
  expect(fake.requests).toEqual([])
}

// Segment's validation names a field by its label ("Event Properties"), core by its key ("properties").
const names = (field: string) =>
  new RegExp(
    [
      field,
      ...Object.values(actions).flatMap((a) =>
        Object.entries(a.fields)
          .filter(([k]) => k === field)
          .map(([, f]) => f.label)
      )
    ].join('|')
  )

// testAction fills a fixed test event in under the one given; blank out what the fixture leaves out.
const ABSENT = {
  userId: undefined,
  anonymousId: undefined,
  event: undefined,
  properties: undefined,
  traits: undefined,
  timestamp: undefined,
  name: undefined,
  integrations: undefined
}
const asTestEvent = (fixture: Fixture) => ({ ...ABSENT, ...fixture.event }) as never

/** What the fake received, as `{path, body}` in the fixture's single-request form. */
const received = () => fake.accepted.map((m) => ({ path: `/${m.type}`, body: m.body }))
const expectedHttp = (fixture: Fixture) =>
  expectedOutcome(fixture, 'cloud-mode')
    .calls.map((c) => c.http)
    .filter((h) => 'path' in h)
const tooLarge = (fixture: Fixture) => expectedOutcome(fixture, 'cloud-mode').calls.some((c) => 'error' in c.http)

function notExpressible(fixture: Fixture): boolean {
  if (!fixture.expect.configError) return false
  // Segment's app owns subscriptions in cloud mode; the fixture says so (never a silent skip).
  expect(fixture.adapters?.['cloud-mode']).toMatch(/Segment's app/)
  return true
}

describe('every fixture through Destination.onEvent with subscriptions', () => {
  it.each(fixtures.map((f) => [f.name, f] as const))('%s', async (_name, fixture) => {
    if (notExpressible(fixture)) return
    const dest = new Destination(destination)
    const { skipped, invalid } = expectedOutcome(fixture, 'cloud-mode')
    let results: unknown[] = []
    let error: (Error & { status?: number }) | undefined
    try {
      results = await dest.onEvent(
        fixture.event as never,
        { ...settingsFor(fixture), subscriptions: subscriptionsFor(fixture) } as never
      )
    } catch (e) {
      error = e as Error & { status?: number }
    }
    if (refusedSettings(fixture)) return expectRefused(fixture, error)
    expect(received()).toEqual(expectedHttp(fixture))
    if (invalid.length > 0) {
      expect(error?.status).toBe(400)
      for (const { field } of invalid) expect(error?.message).toMatch(names(field))
    } else if (tooLarge(fixture)) {
      expect(error).toMatchObject({ status: 413, code: 'PAYLOAD_TOO_LARGE' })
    } else {
      expect(error).toBeUndefined()
    }
    const skipData = results.flatMap((r) =>
      (r as { data?: { skipped?: boolean; reason?: string } }).data?.skipped
        ? [(r as { data: { reason: string } }).data.reason]
        : []
    )
    // Each subscription reports on its own; the event was not subscribed when no subscription ran its action.
    const outputs = results.map((r) => (r as { output?: string }).output)
    const notSubscribed =
      !error && !outputs.includes('Action Executed') && (outputs.length === 0 || outputs.includes('not subscribed'))
    expect([...skipData, ...(notSubscribed ? ['not-subscribed'] : [])]).toEqual(skipped)
  })
})

describe('every fixture through Destination.onBatch (the /batch endpoint)', () => {
  it.each(fixtures.map((f) => [f.name, f] as const))('%s', async (_name, fixture) => {
    if (notExpressible(fixture)) return
    const dest = new Destination(destination)
    if (refusedSettings(fixture)) {
      const refusal = await dest
        .onBatch(
          [fixture.event] as never,
          { ...settingsFor(fixture), subscriptions: subscriptionsFor(fixture) } as never
        )
        .then(
          (results) => {
            const entry = (results as Array<{ multistatus?: Array<{ errormessage?: string; errortype?: string }> }>)
              .flatMap((r) => r.multistatus ?? [])
              .at(0)
            return entry && { message: entry.errormessage, code: entry.errortype }
          },
          (error: Error) => error
        )
      return expectRefused(fixture, refusal)
    }
    const results = (await dest.onBatch(
      [fixture.event] as never,
      { ...settingsFor(fixture), subscriptions: subscriptionsFor(fixture) } as never
    )) as Array<{
      multistatus?: Array<{ status: number; body?: { skipped?: boolean; reason?: string }; errormessage?: string }>
    }>
    const entries = results.flatMap((r) => r.multistatus ?? [])
    expect(fake.accepted.every((m) => m.via === '/batch')).toBe(true)
    expect(received()).toEqual(expectedHttp(fixture))
    const { skipped, invalid } = expectedOutcome(fixture, 'cloud-mode')
    const skipReasons = entries.filter((e) => e.body?.skipped).map((e) => e.body?.reason)
    expect(skipReasons).toEqual(skipped.filter((s) => s !== 'not-subscribed'))
    for (const { field } of invalid)
      expect(entries.some((e) => e.status === 400 && names(field).test(e.errormessage ?? ''))).toBe(true)
    if (tooLarge(fixture)) expect(entries.map((e) => e.status)).toContain(413)
    expect(entries.filter((e) => e.status === 200 && !e.body?.skipped)).toHaveLength(expectedHttp(fixture).length)
  })
})

describe('preset fixtures through createTestIntegration', () => {
  const testDestination = createTestIntegration(destination)
  const presetFixtures = fixtures.filter(
    (f) => !f.subscriptions && (f.event.type === 'track' || f.event.type === 'identify')
  )
  const actionFor = (f: Fixture) => (f.event.type === 'track' ? 'trackEvent' : 'identifyUser')

  it.each(presetFixtures.map((f) => [f.name, f] as const))('testAction: %s', async (_name, fixture) => {
    let error: (Error & { status?: number }) | undefined
    await testDestination
      .testAction(actionFor(fixture), {
        event: asTestEvent(fixture),
        settings: settingsFor(fixture) as never,
        useDefaultMappings: true
      })
      .catch((e: Error) => (error = e))
    if (refusedSettings(fixture)) return expectRefused(fixture, error)
    expect(received()).toEqual(expectedHttp(fixture))
    if (expectedOutcome(fixture, 'cloud-mode').invalid.length > 0 || tooLarge(fixture)) expect(error).toBeDefined()
    else expect(error).toBeUndefined()
  })

  it('testBatchAction: one /batch request for many events, entries lined up with the payloads', async () => {
    const batchable = presetFixtures.filter((f) => f.event.type === 'track' && expectedHttp(f).length === 1)
    await testDestination.testBatchAction('trackEvent', {
      events: batchable.map(asTestEvent),
      settings: settingsFor(batchable[0]!) as never,
      useDefaultMappings: true
    })
    const multistatus = (
      testDestination.results.at(-1) as unknown as { multistatus: Array<{ status: number; sent: { event: string } }> }
    ).multistatus
    expect(fake.requests.filter((r) => r.path === '/batch')).toHaveLength(1)
    expect(received()).toEqual(batchable.flatMap(expectedHttp))
    expect(multistatus.map((m) => [m.status, m.sent.event])).toEqual(batchable.map((f) => [200, f.event.event]))
  })
})
