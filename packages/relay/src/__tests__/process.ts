/** The built `oneflow-relay` CLI as a child process, as users run it. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { tempDir } from './helpers'

export const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'cli.cjs')

/** Writes a config file in a fresh directory; returns its path. */
export function writeConfig(config: Record<string, unknown>, dir = tempDir()): string {
  const file = join(dir, 'oneflow-relay.json')
  writeFileSync(file, JSON.stringify(config, null, 2))
  return file
}

/** Runs a CLI command to completion. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {}
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 30_000
  })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

export interface RelayProcess {
  readonly child: ChildProcess
  readonly url: string
  /** Everything the process printed (its JSON logs). */
  readonly output: () => string
  /** Resolves with the exit code (or signal) once the process ends. */
  readonly exited: Promise<number | string>
}

/** A command line that runs the given one inside something else (e.g. its own mount namespace). */
export type Wrap = (command: string, args: string[]) => [string, string[]]

/** Starts `oneflow-relay start --config <file>` and waits until it listens. */
export async function startRelayProcess(
  configFile: string,
  port: number,
  env: NodeJS.ProcessEnv = {},
  wrap?: Wrap,
  startTimeoutMs = 15_000
): Promise<RelayProcess> {
  const plain: [string, string[]] = [process.execPath, [CLI, 'start', '--config', configFile]]
  const [command, args] = wrap ? wrap(...plain) : plain
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => (output += d.toString('utf8')))
  child.stderr!.on('data', (d: Buffer) => (output += d.toString('utf8')))
  const exited = new Promise<number | string>((resolve) =>
    child.on('exit', (code, signal) => resolve(code ?? signal ?? -1))
  )
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + startTimeoutMs
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the relay exited at start:\n${output}`)
    const up = await fetch(`${url}/health/live`).then(
      (r) => r.ok,
      () => false
    )
    if (up) break
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`the relay did not start:\n${output}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return { child, url, output: () => output, exited }
}

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net')
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** Resident memory of a process, in MB (Linux). */
export function rssMb(pid: number): number {
  const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0)
  return Math.round(kb / 1024)
}
