import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  FIXTURE_API_KEY,
  reviveFixtureJson,
  type ExpectedCall,
  type Fixture,
  type FixtureAdapter,
  type LoadOptions
} from './fixture-json'

export const FIXTURES_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures')

/** Every fixture in `fixtures/`, sorted by name. */
export function loadFixtures(options: LoadOptions = {}): Fixture[] {
  return readdirSync(FIXTURES_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => {
      const body = reviveFixtureJson(readFileSync(join(FIXTURES_DIR, file), 'utf8'), options) as Omit<Fixture, 'name'>
      return { name: file.replace(/\.json$/, ''), ...body }
    })
}

/** Settings for a fixture: its own, or the fixture API key. */
export function fixtureSettings(fixture: Fixture): Record<string, unknown> {
  return fixture.settings ?? { projectApiKey: FIXTURE_API_KEY }
}

/**
 * The configuration error a fixture's settings must give in `adapter` (its own expectation first, as in
 * expectedOutcome), or undefined when they are valid there.
 */
export function expectedConfigError(
  fixture: Fixture,
  adapter: FixtureAdapter
): { readonly code: string; readonly includes: readonly string[] } | undefined {
  const expected =
    fixture.expectFor?.[adapter] ??
    (adapter === 'device-mode' ? fixture.expectFor?.browser : undefined) ??
    fixture.expect
  return expected.configError
}

/** A fixture's expectation (an adapter's own, where it has one) with every list present (empty where the fixture says nothing). */
export function expectedOutcome(
  fixture: Fixture,
  adapter?: FixtureAdapter
): {
  calls: readonly ExpectedCall[]
  skipped: readonly string[]
  invalid: readonly { readonly field: string }[]
} {
  // Device mode is a browser adapter too: its own expectation first, then the browser adapters', then the default.
  const expected =
    (adapter && fixture.expectFor?.[adapter]) ??
    (adapter === 'device-mode' ? fixture.expectFor?.browser : undefined) ??
    fixture.expect
  return {
    calls: expected.calls ?? [],
    skipped: expected.skipped ?? [],
    invalid: expected.invalid ?? []
  }
}
