#!/usr/bin/env node
// `pnpm start`: builds the packages the demo uses (the relay, the Analytics.js plugin and what they import), bundles the demo (the sandbox's stand-in for 1Flow lives in the
// private testkit, as TypeScript), and runs it.
import { spawnSync, spawn } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..', '..')
// (Tests run this inside turbo, which has built everything already: ONEFLOW_DEMO_SKIP_BUILD=1.)
if (!process.env.ONEFLOW_DEMO_SKIP_BUILD) {
  const started = Date.now()
  console.error('pnpm start: building the packages, 1–2 min the first time…')
  // `demo^...`: every workspace package the demo depends on, directly or not (not the demo itself, which
  // esbuild bundles below). Turbo's cache makes later starts take seconds.
  const built = spawnSync(
    'pnpm',
    ['exec', 'turbo', 'run', 'build', '--filter=@oneflow-seg/demo^...', '--output-logs=errors-only'],
    { cwd: root, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, TURBO_TELEMETRY_DISABLED: '1' } }
  )
  if (built.status !== 0) {
    console.error(`pnpm start: the build failed (exit ${built.status ?? built.signal}); its errors are above.`)
    process.exit(built.status ?? 1)
  }
  console.error(`pnpm start: built in ${Math.round((Date.now() - started) / 1000)} s; starting the sandbox…`)
}

const outfile = join(here, '.out', 'demo.mjs')
mkdirSync(dirname(outfile), { recursive: true })
await build({
  entryPoints: [join(here, 'src', 'main.ts')],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // The relay runs from its build, as users run it; only the sandbox's stand-in (TypeScript in testkit) is bundled.
  external: ['@oneflow-seg/relay'],
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: 'warning'
})
// The sandbox demo page (browser code: Analytics.js with the 1Flow plugin).
await build({
  entryPoints: { page: join(here, 'src', 'page.ts') },
  outdir: join(here, '.out', 'page'),
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning'
})
const child = spawn(process.execPath, [outfile, ...process.argv.slice(2)], { stdio: 'inherit', cwd: root })
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal))
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))
