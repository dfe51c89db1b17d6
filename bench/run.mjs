#!/usr/bin/env node
// `pnpm bench <name>`: bundles bench/<name>.ts (workspace packages from source) with esbuild and runs it
// in a fresh Node process, so the numbers do not depend on a test runner. `pnpm bench` runs them all and
// writes bench/RESULTS.md.
import { spawnSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const available = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && !f.startsWith('_'))
  .map((f) => f.replace(/\.ts$/, ''))
  .sort()

const name = process.argv[2]
if (name && !available.includes(name)) {
  console.error(`No benchmark named "${name}". Available: ${available.join(', ')}`)
  process.exit(2)
}

// Benchmarks measure what ships: build the packages first (turbo makes this a no-op when nothing changed).
const built = spawnSync('pnpm', ['exec', 'turbo', 'run', 'build', '--output-logs=errors-only'], {
  stdio: ['ignore', 'ignore', 'inherit'],
  cwd: join(here, '..')
})
if (built.status !== 0) process.exit(built.status ?? 1)

const outdir = join(here, '.out')
mkdirSync(outdir, { recursive: true })

/** Bundles and runs one benchmark; its stdout passes through, and its last line (one JSON object) is returned. */
async function runBench(bench) {
  const outfile = join(outdir, `${bench}.mjs`)
  await build({
    entryPoints: [join(here, `${bench}.ts`)],
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
  const run = spawnSync(process.execPath, ['--expose-gc', outfile, ...process.argv.slice(3)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    cwd: here,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024
  })
  process.stdout.write(run.stdout)
  if (run.status !== 0) throw new Error(`benchmark ${bench} failed (exit ${run.status})`)
  const lines = run.stdout.trim().split('\n')
  return JSON.parse(lines.at(-1))
}

if (name) {
  try {
    await runBench(name)
  } catch (error) {
    console.error(error.message)
    process.exit(1)
  }
} else {
  // Every benchmark, then bench/RESULTS.md: each figure, and the machine it was measured on.
  const results = []
  for (const bench of available) results.push(await runBench(bench))
  const cpu = cpus()
  const lines = [
    '# Benchmark results',
    '',
    `Measured by \`pnpm bench\` on ${new Date().toISOString().slice(0, 10)}: Node ${process.version}, ${cpu[0]?.model.trim() ?? 'unknown CPU'} × ${cpu.length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, ${process.platform}/${process.arch}.`,
    'Each benchmark prints its figures; the last stdout line is one JSON object. Re-run one with `pnpm bench <name>`.',
    '',
    '| benchmark | figure | value |',
    '| --- | --- | --- |',
    ...results.flatMap((r) =>
      Object.entries(r)
        .filter(([k]) => k !== 'bench')
        .map(([k, v]) => `| ${r.bench} | ${k} | ${typeof v === 'object' ? JSON.stringify(v) : v} |`)
    ),
    ''
  ]
  // Notes written by hand below the marker (before/after comparisons) are kept.
  const marker = '<!-- Notes below this line are kept by pnpm bench. -->'
  let notes = `${marker}\n`
  try {
    const previous = readFileSync(join(here, 'RESULTS.md'), 'utf8')
    if (previous.includes(marker)) notes = previous.slice(previous.indexOf(marker))
  } catch {
    // No earlier results.
  }
  writeFileSync(join(here, 'RESULTS.md'), `${lines.join('\n')}\n${notes}`)
  console.log(JSON.stringify({ bench: 'all', results }))
}
