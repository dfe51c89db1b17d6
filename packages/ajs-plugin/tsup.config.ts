import { resolve } from 'node:path'
import type { Options } from 'tsup'
import { packageBuild, PACKAGE_VERSION_DEFINE } from '../../tooling/tsup.config'

export default [
  ...([packageBuild({ index: 'src/index.ts' }, { platform: 'browser' })].flat() as Options[]),
  /**
   * For sites that load Analytics.js with Segment's snippet: one script, `window.OneFlowSegment.oneFlow`, core
   * inside (custom mappings too: mapping-kit bundled, its liquidjs replaced by core's no-op stub).
   */
  {
    entry: { oneflow: 'src/index.ts' },
    format: ['iife'],
    globalName: 'OneFlowSegment',
    platform: 'browser',
    target: 'es2020',
    minify: true,
    sourcemap: true,
    dts: false,
    define: PACKAGE_VERSION_DEFINE,
    noExternal: [/^@oneflow-seg\//, /^@segment\/(actions-core|destination-subscriptions)/, 'liquidjs'],
    esbuildPlugins: [
      {
        name: 'liquid-stub',
        setup: (build) =>
          build.onResolve({ filter: /^liquidjs$/ }, () => ({ path: resolve('..', 'core', 'src', 'liquid-stub.ts') }))
      }
    ]
  }
] as Options[]
