import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { resolve } from 'node:path'
import { defineConfig, type Options } from 'tsup'

/** The package's version from its package.json (the build runs in the package's directory), for `VERSION`. */
export const PACKAGE_VERSION_DEFINE = {
  __PACKAGE_VERSION__: JSON.stringify(
    (JSON.parse(readFileSync(resolve('package.json'), 'utf8')) as { version: string }).version
  )
}

const base: Options = {
  define: PACKAGE_VERSION_DEFINE,
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
/**
 * For Node's ESM loader: an `<entry>.node.mjs` that re-exports the CJS build. actions-core's own ESM build
 * cannot be loaded by Node (extensionless directory imports), so anything importing it must reach Node as
 * CJS; this keeps `import x, { y } from …` working there, default export included.
 */
export function nodeEsmWrapper(entry: string): Options['onSuccess'] {
  return async () => {
    const cjs = resolve('dist', `${entry}.cjs`)
    const names = Object.keys(createRequire(import.meta.url)(cjs) as object).filter(
      (n) => n !== 'default' && n !== '__esModule'
    )
    const lines = [
      `import mod from './${entry}.cjs'`,
      `export const { ${names.join(', ')} } = mod`,
      'export default mod.default',
      ''
    ]
    writeFileSync(resolve('dist', `${entry}.node.mjs`), lines.join('\n'))
  }
}

export function packageBuild(
  entry: Record<string, string>,
  overrides: Options = {},
  layout: { esmModules?: boolean } = {}
) {
  rmSync('dist', { recursive: true, force: true })
  if (!layout.esmModules) return defineConfig({ ...base, entry, format: ['esm', 'cjs'], dts: true, ...overrides })
  return defineConfig([
    { ...base, entry, format: ['cjs'], dts: true, ...overrides },
    {
      ...base,
      entry: ['src/**/*.ts', '!src/**/__tests__/**'],
      format: ['esm'],
      bundle: false,
      dts: { entry },
      ...overrides
    }
  ])
}
