#!/usr/bin/env node
// `pnpm bench <name>`: bundles bench/<name>.ts (workspace packages from source) with esbuild and runs it
// in a fresh Node process, so the numbers do not depend on a test runner or a prior build.
import { spawnSync } from 'node:child_process'
import { mkdirSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const available = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && !f.startsWith('_'))
  .map((f) => f.replace(/\.ts$/, ''))
  .sort()

const name = process.argv[2]
if (!name || !available.includes(name)) {
  console.error(name ? `No benchmark named "${name}".` : 'Name a benchmark.', `Available: ${available.join(', ')}`)
  process.exit(2)
}

// Benchmarks measure what ships: build the packages first (turbo makes this a no-op when nothing changed).
const built = spawnSync('pnpm', ['exec', 'turbo', 'run', 'build', '--output-logs=errors-only'], { stdio: ['ignore', 'ignore', 'inherit'], cwd: join(here, '..') })
if (built.status !== 0) process.exit(built.status ?? 1)

const outdir = join(here, '.out')
mkdirSync(outdir, { recursive: true })
const outfile = join(outdir, `${name}.mjs`)
await build({
  entryPoints: [join(here, `${name}.ts`)],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  conditions: ['@oneflow-seg/source'],
  packages: 'bundle',
  // Packages that run from their build (as users run them) or carry native code / binaries stay external.
  external: ['@oneflow-seg/relay', 'better-sqlite3', 'pg', 'pg-native', 'playwright-core', 'esbuild', 'autocannon'],
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: 'warning'
})
const run = spawnSync(process.execPath, ['--expose-gc', outfile, ...process.argv.slice(3)], { stdio: 'inherit', cwd: here })
process.exit(run.status ?? 1)
