/**
 * README's "Start it" command, exactly as written there, in a fresh clone of this repository (its committed
 * HEAD), with nothing built and no turbo cache: the first thing every user does. It must print the demo's
 * address, serve the demo page on :8789 and a ready relay on :8787, and stop on Ctrl-C.
 */
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, expect, it } from 'vitest'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const PORTS = { relay: 8787, demo: 8789 } as const

/** The command README gives under "Start it" (the first `sh` block after those words). */
function readmeStartCommand(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const match = /\*\*Start it\*\*[\s\S]*?```sh\n([^\n]+)\n```/.exec(readme)
  if (!match?.[1]) throw new Error('README.md has no "Start it" command in a ```sh block')
  return match[1]
}

const portIsFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = createServer()
      .once('error', () => resolve(false))
      .listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })

const work = mkdtempSync(join(tmpdir(), 'oneflow-fresh-clone-'))
let child: ReturnType<typeof spawn> | undefined
afterAll(() => {
  try {
    if (child?.pid) process.kill(-child.pid, 'SIGKILL') // whatever a failed run left behind
  } catch {
    // the group has already exited
  }
  rmSync(work, { recursive: true, force: true })
})

it("README's start command works in a fresh clone: demo on :8789, relay ready on :8787, Ctrl-C stops it", async () => {
  for (const port of Object.values(PORTS))
    expect(await portIsFree(port), `port ${port} is taken (is \`pnpm start\` running?)`).toBe(true)
  const clone = join(work, 'oneflow-seg')
  const cloned = spawnSync('git', ['clone', '-q', root, clone], { encoding: 'utf8' })
  expect(cloned.status, cloned.stderr).toBe(0)

  // A newcomer's environment: their PATH and HOME (so pnpm's store is the machine's), no variables from the
  // pnpm/turbo run around this test. npm's global prefix is a folder of the test's own, so `npm install -g`
  // does not replace the pnpm that is running the other packages' tests; npm's global config (where this
  // machine keeps its CA file) stays the machine's, which a new prefix would otherwise move.
  const prefix = join(work, 'npm-global')
  const globalconfig = spawnSync('npm', ['config', 'get', 'globalconfig'], { encoding: 'utf8' }).stdout.trim()
  const env: NodeJS.ProcessEnv = {
    HOME: process.env.HOME,
    PATH: `${join(prefix, 'bin')}:${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`,
    CI: process.env.CI,
    npm_config_prefix: prefix,
    npm_config_globalconfig: globalconfig,
    TURBO_TELEMETRY_DISABLED: '1'
  }
  const command = readmeStartCommand()
  expect(command).toContain('pnpm start')
  let output = ''
  child = spawn('sh', ['-c', command], { cwd: clone, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()))
  const exited = new Promise<void>((resolve) => child!.on('exit', () => resolve()))

  // It says that it builds, then where the demo is. A hang guard only (a loaded machine takes minutes to
  // install and build), short of the test's own timeout so that what it printed is reported.
  const deadline = Date.now() + 1_080_000
  while (!/Open the demo: (\S+)/.test(output)) {
    if (child.exitCode !== null) throw new Error(`"${command}" exited ${child.exitCode}:\n${output}`)
    if (Date.now() > deadline) throw new Error(`"${command}" printed no demo address in 18 min:\n${output}`)
    await new Promise((r) => setTimeout(r, 250))
  }
  expect(output).toContain('building the packages, 1–2 min the first time')
  expect(/Open the demo: (\S+)/.exec(output)![1]).toBe(`http://127.0.0.1:${PORTS.demo}`)

  const page = await fetch(`http://127.0.0.1:${PORTS.demo}/`)
  expect(page.status).toBe(200)
  const html = await page.text()
  expect(html).toContain('Segment → 1Flow')
  const script = await fetch(`http://127.0.0.1:${PORTS.demo}/page.js`)
  expect(script.status, 'the demo page bundle').toBe(200)
  const ready = await fetch(`http://127.0.0.1:${PORTS.relay}/health/ready`)
  expect(ready.status).toBe(200)
  expect(await ready.json()).toMatchObject({ status: 'ready' })

  // Ctrl-C reaches the whole foreground process group: everything it started stops and frees its port.
  process.kill(-child.pid!, 'SIGINT')
  await exited
  const groupAlive = () => {
    try {
      process.kill(-child!.pid!, 0)
      return true
    } catch {
      return false
    }
  }
  while (groupAlive()) await new Promise((r) => setTimeout(r, 100))
  for (const port of Object.values(PORTS)) expect(await portIsFree(port), `port ${port} after Ctrl-C`).toBe(true)
})
