import { describe, expect, it } from 'vitest'
import { expectedOutcome, fixtureSettings, loadFixtures, type Fixture } from '@oneflow-seg/testkit'
import {
  buildRequest,
  mapWithPresets,
  PayloadTooLargeError,
  resolveSettings,
  toSdkCall,
  type MappedResult
} from '../index'
import { compileSubscriptions, mapWithSubscriptions } from '../mapping'

const fixtures = loadFixtures({ dates: 'date' })

/** The settings a server adapter (the relay) takes from a fixture: the key and the consent categories. */
function serverSettings(fixture: Fixture) {
  const { projectApiKey, consentCategories } = fixtureSettings(fixture)
  return resolveSettings({ projectApiKey, consentCategories })
}

function run(fixture: Fixture): MappedResult[] {
  const options = { consentCategories: serverSettings(fixture).consentCategories }
  return fixture.subscriptions === undefined
    ? mapWithPresets(fixture.event, options)
    : mapWithSubscriptions(fixture.event, compileSubscriptions(fixture.subscriptions), options)
}

function observe(fixture: Fixture, results: MappedResult[]) {
  const target = serverSettings(fixture)
  const calls: unknown[] = []
  const skipped: string[] = []
  const invalid: { field: string }[] = []
  for (const { outcome } of results) {
    if (outcome.kind === 'skip') skipped.push(outcome.reason)
    else if (outcome.kind === 'invalid') invalid.push({ field: outcome.error.field })
    else {
      let http: unknown
      try {
        const req = buildRequest(outcome, target)
        http = { path: req.path, body: JSON.parse(req.body) }
      } catch (error) {
        if (!(error instanceof PayloadTooLargeError)) throw error
        http = { error: error.code }
      }
      calls.push({ sdk: toSdkCall(outcome), http })
    }
  }
  return { calls, skipped, invalid }
}

describe('conformance fixtures through core as pure functions', () => {
  it('has at least 40 fixtures', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(40)
  })

  it.each(fixtures.map((f) => [f.name, f] as const))('%s', (_name, fixture) => {
    const before = structuredClone(fixture.event)
    if (fixture.expect.configError) {
      let thrown: unknown
      try {
        compileSubscriptions(fixture.subscriptions)
      } catch (error) {
        thrown = error
      }
      expect(thrown).toMatchObject({ code: fixture.expect.configError.code })
      for (const text of fixture.expect.configError.includes) expect((thrown as Error).message).toContain(text)
      return
    }
    expect(observe(fixture, run(fixture))).toEqual(expectedOutcome(fixture))
    // Mapping never mutates the event it was given.
    expect(fixture.event).toEqual(before)
  })
})
