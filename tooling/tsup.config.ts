import { defineConfig, type Options } from 'tsup'

/**
 * The one build config every published package uses: ESM (.js) + CJS (.cjs) + types (.d.ts / .d.cts),
 * matching each package's single `exports` map. Packages pass only their entries and what differs.
 */
export function packageBuild(entry: Record<string, string>, overrides: Options = {}) {
  return defineConfig({
    entry,
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'es2020',
    platform: 'neutral',
    splitting: true,
    treeshake: true,
    ...overrides
  })
}
