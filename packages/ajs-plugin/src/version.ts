// Replaced with package.json's version when the package is built (tooling/tsup.config.ts) and tested
// (tooling/vitest.config.ts), so `changeset version` is the only place a version changes. Bundled from source
// elsewhere (a benchmark, a test page), it reads "source".
declare const __PACKAGE_VERSION__: string | undefined

/** This package's version, as published. */
export const VERSION: string = typeof __PACKAGE_VERSION__ === 'string' ? __PACKAGE_VERSION__ : 'source'
