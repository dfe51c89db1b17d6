import { resolve } from 'node:path'
import type { Options } from 'tsup'
import { nodeEsmWrapper, packageBuild } from '../../tooling/tsup.config'

const liquidStub = resolve('..', 'core', 'src', 'liquid-stub.ts')

/**
 * Two runtimes, three builds:
 * - device mode for Node and tools (ESM + CJS, dependencies external);
 * - device mode for browser bundlers (`browser` condition): Segment's browser runtime, mapping-kit and FQL parser
 *   bundled in with liquidjs replaced by core's stub (actions-core imports liquidjs without declaring it), so an
 *   app's bundler needs no alias; core and Analytics.js stay external;
 * - cloud mode for Node: CJS with `@segment/actions-core` bundled in, together with the dependency versions it
 *   works with (fast-uri 3.1.5: newer ones make its payload validation throw for destination names with spaces
 *   or parentheses; liquidjs, which it does not declare). Users take `Destination` from this entry. An ESM
 *   wrapper re-exports it for Node's ESM loader.
 */
export default [
  packageBuild({ browser: 'src/browser/index.ts' }, { platform: 'browser' }),
  {
    entry: { 'browser.bundle': 'src/browser/index.ts' },
    format: ['esm'],
    platform: 'browser',
    target: 'es2022',
    splitting: false,
    sourcemap: true,
    dts: false,
    noExternal: [/^@segment\/(browser-destination-runtime|actions-core|destination-subscriptions)/],
    esbuildPlugins: [
      { name: 'liquid-stub', setup: (build) => build.onResolve({ filter: /^liquidjs$/ }, () => ({ path: liquidStub })) }
    ]
  },
  {
    entry: { cloud: 'src/cloud/index.ts' },
    format: ['cjs'],
    platform: 'node',
    target: 'node20',
    splitting: false,
    // Most of it is actions-core and its dependencies: their maps would triple the package for little use.
    sourcemap: false,
    dts: true,
    noExternal: [/^@segment\/actions-core/, /^@segment\/destination-subscriptions/],
    // The ESM wrapper re-exports the CJS build, so the same declarations describe it (package.json's build
    // script copies cloud.d.cts to cloud.d.ts once the declarations exist).
    onSuccess: nodeEsmWrapper('cloud')
  }
] as Options[]
