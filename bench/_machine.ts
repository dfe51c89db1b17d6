import { cpus, totalmem } from 'node:os'

/** The machine a figure was measured on, printed with every benchmark. */
export function machine(): { node: string; cpu: string; cores: number; memory_gib: number } {
  const cpu = cpus()
  return { node: process.version, cpu: cpu[0]?.model.trim() ?? 'unknown', cores: cpu.length, memory_gib: Math.round(totalmem() / 2 ** 30) }
}

/** Median of a list of numbers. */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}
