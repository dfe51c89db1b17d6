import pino from 'pino'
import { Writable } from 'node:stream'
import { expect, it } from 'vitest'
import { QueueHealth } from '../queue-health'

function recorder(): { logger: pino.Logger; lines: Array<{ msg: string }> } {
  const lines: Array<{ msg: string }> = []
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as { msg: string })
      done()
    }
  })
  return { logger: pino({ level: 'info' }, sink), lines }
}

it('many delivery failures at once share one probe write; a failing probe marks the queue failing once', async () => {
  const { logger, lines } = recorder()
  let probes = 0
  let writable = true
  let release: () => void = () => {}
  const health = new QueueHealth(logger, { now: () => 0, sleep: async () => {} }, async () => {
    probes++
    await new Promise<void>((resolve) => (release = resolve))
    if (!writable) throw new Error('disk full')
  })
  const waiting = Array.from({ length: 50 }, () => health.failedUnlessWritable(new Error('lock timeout'), 'leasing'))
  release()
  await Promise.all(waiting)
  expect(probes).toBe(1)
  expect(health.problem).toBeUndefined()
  expect(lines.filter((l) => l.msg.startsWith('leasing failed'))).toHaveLength(1)

  writable = false
  const failing = Array.from({ length: 50 }, () => health.failedUnlessWritable(new Error('lock timeout'), 'leasing'))
  release()
  await Promise.all(failing)
  expect(probes).toBe(2)
  expect(health.problem).toBe('disk full')
  expect(lines.filter((l) => l.msg.startsWith('the queue is failing'))).toHaveLength(1)

  // A later probe that writes clears the failure (ingest accepts again) and says so once.
  writable = true
  const recovered = health.failedUnlessWritable(new Error('lock timeout'), 'leasing')
  release()
  await recovered
  expect(health.problem).toBeUndefined()
  expect(lines.filter((l) => l.msg.startsWith('the queue takes writes again'))).toHaveLength(1)
})
