import { rmSync } from 'node:fs'
import { defineConfig, type Options } from 'tsup'

const base: Options = {
  sourcemap: true,
  target: 'es2022',
  platform: 'neutral',
  splitting: true,
  treeshake: true
}

/**
 * The one build config every published package uses: ESM (.js) + CJS (.cjs) + types (.d.ts / .d.cts),
 * matching each package's single `exports` map. Packages pass only their entries and what differs.
 *
 * `esmModules: true` ships the ESM build unbundled, one file per source module, so that an app's bundler
 * can split at module granularity (a lazily imported sub-entry then takes only the modules it alone needs,
 * instead of dragging them into the eager chunk). The CJS build stays bundled, with shared chunks.
 */
export function packageBuild(entry: Record<string, string>, overrides: Options = {}, layout: { esmModules?: boolean } = {}) {
  rmSync('dist', { recursive: true, force: true })
  if (!layout.esmModules) return defineConfig({ ...base, entry, format: ['esm', 'cjs'], dts: true, ...overrides })
  return defineConfig([
    { ...base, entry, format: ['cjs'], dts: true, ...overrides },
    { ...base, entry: ['src/**/*.ts', '!src/**/__tests__/**'], format: ['esm'], bundle: false, dts: { entry }, ...overrides }
  ])
}
