import { resolve } from 'node:path'
import type { Options } from 'tsup'
import { packageBuild } from '../../tooling/tsup.config'

/**
 * The `browser` build of `./mapping`: Segment's mapping-kit and FQL parser bundled in, with liquidjs replaced by
 * core's stub (actions-core imports liquidjs without declaring it, and browser bundles have no use for it), so an
 * app's bundler needs no alias. Core's own modules stay imports of the per-module ESM files beside it, so their
 * classes (InvalidSubscriptionError…) are the same objects as the main entry's.
 */
const mappingForBrowsers: Options = {
  entry: { 'mapping.browser': 'src/mapping.ts' },
  format: ['esm'],
  platform: 'browser',
  target: 'es2022',
  bundle: true,
  splitting: false,
  sourcemap: true,
  dts: false,
  noExternal: [/^@segment\//, 'liquidjs'],
  esbuildPlugins: [
    {
      name: 'core-modules-external-liquid-stubbed',
      setup(build) {
        build.onResolve({ filter: /^\.\/[\w-]+\.js$/ }, (args) => ({ path: args.path, external: true }))
        build.onResolve({ filter: /^liquidjs$/ }, () => ({ path: resolve('src/liquid-stub.ts') }))
      }
    }
  ]
}

export default [
  ...(packageBuild(
    {
      index: 'src/index.ts',
      subscriptions: 'src/subscriptions.ts',
      browser: 'src/browser.ts',
      'browser-start': 'src/browser-start.ts',
      mapping: 'src/mapping.ts'
    },
    {},
    { esmModules: true }
  ) as Options[]),
  mappingForBrowsers
]
