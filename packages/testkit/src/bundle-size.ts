/**
 * Bundle sizes of what ships (each package's built dist, resolved as an app would resolve it), minified
 * by esbuild and gzipped at level 9. Shared by the budget tests and `pnpm bench browser`.
 */
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { build } from 'esbuild'
import { LIQUID_STUB } from './browser-harness'

export const BUDGETS = {
  /** The plugin's default import: everything but analytics-next (custom-mapping code loads lazily and is not counted). */
  pluginGzipBytes: 4_000,
  /**
   * The device-mode destination as Segment's CDN would ship it: one file, browser runtime included. Raised from
   * 15,000 when device mode gained the identity hand-over, the shared pre-ready buffer, core's finishRoutes and
   * the loadTimeoutMs/bufferLimit settings (together about 0.7 KB); Segment's own build is 64.5 KB.
   */
  destinationGzipBytes: 16_000
} as const

export interface BundleSize {
  readonly bytes: number
  readonly gzipBytes: number
}

async function measure(
  contents: string,
  resolveDir: string,
  extra: { external?: string[]; format: 'esm' | 'iife' }
): Promise<BundleSize> {
  const result = await build({
    stdin: { contents, resolveDir, loader: 'js' },
    bundle: true,
    minify: true,
    write: false,
    platform: 'browser',
    format: extra.format,
    external: extra.external ?? [],
    alias: { liquidjs: LIQUID_STUB },
    define: { 'process.env.NODE_ENV': '"production"' },
    logLevel: 'error'
  })
  const code = result.outputFiles[0]!.contents
  return { bytes: code.length, gzipBytes: gzipSync(code, { level: 9 }).length }
}

/** `import { oneFlow } from '@oneflow-seg/ajs-plugin'` as an app bundles it; the lazily imported mapping chunk is left out. */
export function measurePluginBundle(packageDir: string): Promise<BundleSize> {
  return measure("import { oneFlow } from '@oneflow-seg/ajs-plugin'; window.oneFlow = oneFlow", packageDir, {
    format: 'esm',
    external: ['@oneflow-seg/core/mapping', '@segment/analytics-next']
  })
}

/** What custom mappings load on demand: core's mapping entry with Segment's mapping-kit and FQL parser (standalone, so an upper bound). */
export function measureMappingChunk(packageDir: string): Promise<BundleSize> {
  return measure(
    "import { compileSubscriptions, mapWithSubscriptions } from '@oneflow-seg/core/mapping'; window.m = [compileSubscriptions, mapWithSubscriptions]",
    packageDir,
    {
      format: 'esm'
    }
  )
}

/**
 * The device-mode destination bundled the way Segment's CDN build does: one file, runtime and all, built from the
 * destination's module (its ESM build), not from the prebuilt `browser` bundle offered to apps that load device
 * mode themselves.
 */
export function measureDestinationBundle(packageDir: string): Promise<BundleSize> {
  return measure(
    `import d from ${JSON.stringify(join(packageDir, 'dist', 'browser.js'))}; window['1flowDestination'] = d`,
    packageDir,
    { format: 'iife' }
  )
}
