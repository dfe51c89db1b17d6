import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { cpus, totalmem } from 'node:os'

/** The machine a figure was measured on, printed with every benchmark. */
export function machine(): { node: string; cpu: string; cores: number; memory_gib: number } {
  const cpu = cpus()
  return {
    node: process.version,
    cpu: cpu[0]?.model.trim() ?? 'unknown',
    cores: cpu.length,
    memory_gib: Math.round(totalmem() / 2 ** 30)
  }
}

/** Median of a list of numbers. */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

/** The repository root (benchmarks run from a bundle in bench/.out, so paths are found, not assumed). */
export function repoRoot(): string {
  let dir = process.cwd()
  while (!existsSync(join(dir, 'pnpm-workspace.yaml'))) {
    const up = dirname(dir)
    if (up === dir) throw new Error('not inside the oneflow-seg repository')
    dir = up
  }
  return dir
}
