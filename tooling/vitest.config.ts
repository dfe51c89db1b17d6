import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { defaultClientConditions, defaultServerConditions } from 'vite'
import { defineConfig, type ViteUserConfig } from 'vitest/config'

/** Workspace packages resolve to their TypeScript sources in tests, so nothing needs building first. */
export const SOURCE_CONDITION = '@oneflow-seg/source'

/** The one test config every package uses; packages pass only what differs. */
export function packageTests(overrides: ViteUserConfig['test'] = {}): ViteUserConfig {
  const { version } = JSON.parse(readFileSync(resolve('package.json'), 'utf8')) as { version: string }
  return defineConfig({
    define: { __PACKAGE_VERSION__: JSON.stringify(version) },
    resolve: { conditions: [SOURCE_CONDITION, ...defaultClientConditions] },
    ssr: {
      resolve: { conditions: [SOURCE_CONDITION, ...defaultServerConditions], externalConditions: [SOURCE_CONDITION] }
    },
    test: {
      include: ['src/**/__tests__/**/*.test.ts', 'test/**/*.test.ts'],
      // A hang guard, not a timing assertion: CPU-heavy tests (linting, property tests, bundling) take several
      // times their idle duration while every package tests at once on a loaded 2-core machine.
      testTimeout: 60_000,
      hookTimeout: 30_000,
      ...overrides
    }
  })
}
