/**
 * Clients that do not behave, against the built CLI: bodies sent a byte at a time, hundreds of connections that
 * stop half-way through a 500 KB body, and SIGTERM while they hang on. Every such request ends at
 * `limits.requestTimeoutMs`, the memory it held is given back, and shutdown does not wait for them.
 */
import { connect, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { post, tempDir } from './helpers'
import { freePort, rssMb, startRelayProcess, writeConfig, type RelayProcess } from './process'

const WRITE_KEY = 'wk_hostile_0123'
const REQUEST_TIMEOUT_MS = 2_000

let fake: FakeOneFlowApi
let relay: RelayProcess
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
  const port = await freePort()
  const file = writeConfig(
    {
      listen: { host: '127.0.0.1', port },
      queue: 'sqlite:./relay.db',
      oneflow: { apiBaseUrl: fake.url },
      limits: { requestTimeoutMs: REQUEST_TIMEOUT_MS },
      shutdownGraceMs: 5_000,
      sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: 'test-project-key' }]
    },
    tempDir()
  )
  relay = await startRelayProcess(file, port)
}, 30_000)
afterAll(async () => {
  relay?.child.kill('SIGKILL')
  await fake?.close()
})

interface OpenRequest {
  readonly socket: Socket
  /** Resolves with what the server answered (maybe nothing) once it closes the connection. */
  readonly closed: Promise<{ at: number; answer: string }>
}

/** Opens a POST whose headers promise `contentLength` bytes; the caller sends (some of) the body. */
function openRequest(path: string, contentLength: number, authorized: boolean): OpenRequest {
  const { port } = new URL(relay.url)
  const socket = connect(Number(port), '127.0.0.1')
  socket.on('error', () => undefined)
  let answer = ''
  socket.on('data', (d) => (answer += d.toString('latin1')))
  const closed = new Promise<{ at: number; answer: string }>((resolve) =>
    socket.on('close', () => resolve({ at: Date.now(), answer }))
  )
  const auth = authorized ? `Authorization: Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}\r\n` : ''
  socket.write(
    `POST ${path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n${auth}Content-Length: ${contentLength}\r\n\r\n`
  )
  return { socket, closed }
}

describe('slow and stalled bodies', () => {
  it.each([
    ['with a write key in Basic auth', true],
    ['with the write key (to be) in the body', false]
  ])(
    'a body sent a byte every 400 ms %s is cut at the request timeout (408), not kept open',
    async (_what, authorized) => {
      const started = Date.now()
      const req = openRequest('/v1/batch', 1000, authorized)
      const body = `{"writeKey":"${WRITE_KEY}","batch":[`
      let i = 0
      const drip = setInterval(() => {
        if (!req.socket.destroyed) req.socket.write(body[i++ % body.length] as string)
      }, 400)
      const { at, answer } = await req.closed
      clearInterval(drip)
      expect(answer).toMatch(/^HTTP\/1\.1 408/)
      expect(at - started).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS - 100)
      expect(at - started).toBeLessThan(REQUEST_TIMEOUT_MS + 3_000)
    }
  )

  it('300 connections stalled half-way through a 500 KB body: all closed by the timeout, the memory they hold bounded by the body budget', async () => {
    const pid = relay.child.pid as number
    for (let i = 0; i < 20; i++)
      await post(
        relay.url,
        '/v1/batch',
        { batch: Array.from({ length: 100 }, (_, j) => ({ type: 'track', event: 'Warm', userId: `w${j}` })) },
        WRITE_KEY
      )
    const baseline = rssMb(pid)
    const chunk = Buffer.alloc(64 * 1024, 'a')
    const requests = Array.from({ length: 300 }, () => openRequest('/v1/batch', 500 * 1024, true))
    const started = Date.now()
    let peak = 0
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 100)
    // 448 KB of each body, then nothing more.
    await Promise.all(
      requests.map(async ({ socket }) => {
        for (let k = 0; k < 7 && !socket.destroyed; k++)
          if (!socket.write(chunk)) await new Promise((r) => socket.once('drain', r).once('close', r))
      })
    )
    const closed = await Promise.all(requests.map((r) => r.closed))
    clearInterval(sampler)
    const after = closed.map((c) => c.at - started)
    // Every connection is closed by the relay, none left open: at the request timeout (408), or at once when the
    // body budget (64 MiB, about 130 such bodies) is spent (503). The relay counts each answer it gave.
    expect(Math.max(...after)).toBeLessThan(REQUEST_TIMEOUT_MS + 5_000)
    for (const { answer } of closed) expect(answer === '' || /^HTTP\/1\.1 (408|503) /.test(answer)).toBe(true)
    const metrics = await (await fetch(`${relay.url}/metrics`)).text()
    // The budget turned some away at once (how many depends on how fast the 300 arrive).
    expect(
      Number(/relay_ingest_requests_total\{route="batch",status="503"\} (\d+)/.exec(metrics)?.[1] ?? 0)
    ).toBeGreaterThan(0)
    // Unbounded, the 300 bodies would take ~135 MB more; the budget keeps it near 64 MB.
    expect(peak - baseline).toBeLessThan(110)
    expect((await post(relay.url, '/v1/track', { event: 'After', userId: 'u' }, WRITE_KEY)).status).toBe(200)
    console.info(`RSS MB: baseline ${baseline}, peak ${peak}, after ${rssMb(pid)}`)
  }, 60_000)
})

describe('SIGTERM with clients hanging on', () => {
  it('exits 0 within shutdownGraceMs, cutting the stalled connections', async () => {
    const stalled = Array.from({ length: 20 }, () => openRequest('/v1/batch', 200 * 1024, true))
    for (const { socket } of stalled) socket.write('{"batch":[')
    await new Promise((r) => setTimeout(r, 300))
    const signalled = Date.now()
    relay.child.kill('SIGTERM')
    expect(await relay.exited).toBe(0)
    expect(Date.now() - signalled).toBeLessThan(5_000)
    await Promise.all(stalled.map((s) => s.closed))
  }, 30_000)
})
