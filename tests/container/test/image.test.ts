/**
 * The relay's container image, as an operator builds and runs it: `pnpm image` (deploy/Containerfile, packed
 * tarballs, podman) and then `podman run` with the image's own config and a data volume, and with a mounted
 * config and PostgreSQL. No container registry is reachable here, so the base image is made from Debian's
 * packages (debootstrap) plus this machine's Node, and passed to the Containerfile as its build arguments, as
 * docs/deploy.md tells users without registry access to do. Podman's storage and settings live in a directory
 * of the test's own (runc, and the file limit the machine allows), deleted afterwards. The containers share the
 * host's network, so every request stays on 127.0.0.1.
 */
import { spawnSync } from 'node:child_process'
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  writeFileSync
} from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeOneFlowApi, startThrowawayPostgres, type ThrowawayPostgres } from '@oneflow-seg/testkit'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const work = mkdtempSync(join(tmpdir(), 'oneflow-image-'))
const BASE = 'localhost/oneflow-test-base:latest'
const IMAGE = 'localhost/oneflow-relay-test:latest'
const WRITE_KEY = 'wk_image_test_0123456789abcdef'
const PROJECT_KEY = 'test-project-key'

const hardFileLimit = spawnSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).stdout.trim()
const limit = /^\d+$/.test(hardFileLimit) ? hardFileLimit : '65536'
writeFileSync(
  join(work, 'containers.conf'),
  `[containers]\ndefault_ulimits = ["nofile=${limit}:${limit}", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n`
)
writeFileSync(
  join(work, 'storage.conf'),
  `[storage]\ndriver = "overlay"\ngraphroot = "${join(work, 'storage')}"\nrunroot = "${join(work, 'run')}"\n`
)
const env: NodeJS.ProcessEnv = {
  ...process.env,
  CONTAINERS_CONF: join(work, 'containers.conf'),
  CONTAINERS_STORAGE_CONF: join(work, 'storage.conf')
}

function run(cmd: string, args: string[], options: { cwd?: string; input?: Buffer } = {}) {
  const r = spawnSync(cmd, args, {
    cwd: options.cwd ?? work,
    env,
    input: options.input,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: 800_000
  })
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`, stdout: r.stdout ?? '' }
}
function ok(cmd: string, args: string[], options: { cwd?: string } = {}): string {
  const r = run(cmd, args, options)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.out.slice(-4000)}`)
  return r.stdout
}
const podman = (...args: string[]) => run('podman', args)

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = createServer()
      .once('error', reject)
      .listen(0, '127.0.0.1', () => {
        const { port } = s.address() as { port: number }
        s.close(() => resolve(port))
      })
  })

async function waitReady(port: number, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/health/ready`)
      if (r.ok) return
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`the relay in the container was not ready on :${port} in ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 250))
  }
}

const track = (i: number) => ({
  type: 'track',
  event: 'Signed Up',
  userId: `user-${i % 3}`,
  messageId: `image-test-${i}`,
  properties: { i }
})
const send = (port: number, events: unknown[]) =>
  fetch(`http://127.0.0.1:${port}/v1/batch`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`
    },
    body: JSON.stringify({ batch: events })
  })

/** A base image with what the official Node image has: Debian, Node and npm, a compiler for native addons. */
function makeBaseImage(): void {
  const rootfs = join(work, 'rootfs')
  const codename = /VERSION_CODENAME=(\w+)/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? 'bookworm'
  ok(existsSync('/usr/sbin/debootstrap') ? '/usr/sbin/debootstrap' : 'debootstrap', [
    '--variant=minbase',
    '--include=python3,make,g++',
    codename,
    rootfs,
    'http://deb.debian.org/debian'
  ])
  const prefix = dirname(dirname(realpathSync(process.execPath)))
  mkdirSync(join(rootfs, 'usr/local/bin'), { recursive: true })
  copyFileSync(realpathSync(process.execPath), join(rootfs, 'usr/local/bin/node'))
  const npmDir = dirname(dirname(realpathSync(ok('sh', ['-c', 'command -v npm']).trim())))
  cpSync(npmDir, join(rootfs, 'usr/local/lib/node_modules/npm'), { recursive: true })
  ok('ln', ['-s', '../lib/node_modules/npm/bin/npm-cli.js', join(rootfs, 'usr/local/bin/npm')])
  // Node's headers, so node-gyp builds better-sqlite3 without downloading them (nodejs.org is not reachable).
  cpSync(join(prefix, 'include/node'), join(rootfs, 'usr/local/include/node'), { recursive: true })
  const changes = ['--change', 'ENV npm_config_nodedir=/usr/local']
  // The machine's certificate authorities, which may include a proxy's through which it reaches the npm
  // registry: npm in the image must trust what npm here trusts. (Not read from NODE_EXTRA_CA_CERTS: turbo does
  // not pass the environment on to tests.)
  const ca = ['/etc/ssl/certs/ca-certificates.crt', process.env.NODE_EXTRA_CA_CERTS].find((f) => f && existsSync(f))
  if (ca) {
    mkdirSync(join(rootfs, 'etc/ssl/certs'), { recursive: true })
    copyFileSync(ca, join(rootfs, 'etc/ssl/certs/machine-ca.crt'))
    changes.push('--change', 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/machine-ca.crt')
  }
  const tar = spawnSync('tar', ['-C', rootfs, '-c', '.'], { maxBuffer: 4 * 1024 * 1024 * 1024 })
  if (tar.status !== 0) throw new Error(`tar of the base image failed: ${String(tar.stderr)}`)
  const imported = spawnSync('podman', ['import', ...changes, '-', BASE], { env, input: tar.stdout, encoding: 'utf8' })
  if (imported.status !== 0) throw new Error(`podman import failed: ${imported.stderr}`)
  ok('rm', ['-rf', rootfs])
}

let buildOutput = ''
beforeAll(() => {
  makeBaseImage()
  // README/docs' command, with the base image for both stages and the host's network (the registry's proxy).
  buildOutput = ok(
    'node',
    [
      'tooling/build-image.mjs',
      '--build-arg',
      `BUILD_IMAGE=${BASE}`,
      '--build-arg',
      `NODE_IMAGE=${BASE}`,
      '--network',
      'host',
      '-t',
      IMAGE
    ],
    { cwd: root }
  )
})

afterAll(() => {
  podman('rm', '--all', '--force', '--time', '0')
  podman('system', 'reset', '--force')
  run('rm', ['-rf', work])
})

describe('the image', () => {
  it('is built by `pnpm image` and says what it built', () => {
    expect(buildOutput).toMatch(/pnpm image: built the image with podman/)
    const inspect = JSON.parse(podman('image', 'inspect', IMAGE).stdout) as Array<{
      Config: { User: string; Volumes?: Record<string, unknown>; Env: string[] }
      Healthcheck?: { Test: string[] }
    }>
    const config = inspect[0]!.Config
    expect(config.User).toBe('10001:10001')
    expect(Object.keys(config.Volumes ?? {})).toEqual(['/data'])
    expect(inspect[0]!.Healthcheck?.Test.join(' ')).toContain('/health/ready')
    expect(config.Env).toContain('RELAY_QUEUE=sqlite:/data/relay.db')
  })

  it('runs with its own config and a data volume: ready, healthy, not root, stops on SIGTERM, keeps the queue', async () => {
    const port = await freePort()
    const started = podman(
      'run',
      '--detach',
      '--name',
      'relay-sqlite',
      '--network',
      'host',
      '--env',
      'HOST=127.0.0.1',
      '--env',
      `PORT=${port}`,
      '--env',
      `SEGMENT_WRITE_KEY=${WRITE_KEY}`,
      '--env',
      `ONEFLOW_PROJECT_API_KEY=${PROJECT_KEY}`,
      '--volume',
      'relay-data:/data',
      IMAGE
    )
    expect(started.status, started.out).toBe(0)
    await waitReady(port)
    const health = podman('healthcheck', 'run', 'relay-sqlite')
    expect(health.status, health.out).toBe(0)
    expect(podman('exec', 'relay-sqlite', 'id', '-u').stdout.trim()).toBe('10001')
    // The image's config sends to 1Flow's real API, which is not reachable here: the events wait in the queue.
    expect((await send(port, [track(1), track(2)])).status).toBe(200)

    const stopped = podman('stop', '--time', '30', 'relay-sqlite')
    expect(stopped.status, stopped.out).toBe(0)
    expect(podman('inspect', 'relay-sqlite', '--format', '{{.State.ExitCode}}').stdout.trim()).toBe('0')
    const logs = podman('logs', 'relay-sqlite').out
    expect(logs).toContain('"signal":"SIGTERM"')
    expect(logs).not.toContain(WRITE_KEY)
    expect(logs).not.toContain(PROJECT_KEY)

    // An admin command through the image's entry point reads the queue the volume kept: both events are there.
    const stats = podman(
      'run',
      '--rm',
      '--volume',
      'relay-data:/data',
      IMAGE,
      'stats',
      '--config',
      '/etc/oneflow-relay/oneflow-relay.json'
    )
    expect(stats.status, stats.out).toBe(0)
    expect((JSON.parse(stats.stdout) as { pending: number }).pending).toBe(2)
  })

  describe('with a mounted config and PostgreSQL', () => {
    let pg: ThrowawayPostgres
    let oneflow: FakeOneFlowApi
    beforeAll(async () => {
      pg = await startThrowawayPostgres()
      oneflow = await FakeOneFlowApi.start({ apiKeys: [PROJECT_KEY] })
    })
    afterAll(async () => {
      await oneflow?.close()
      pg?.stop()
    })

    it('delivers to 1Flow, every event once and in order per user', async () => {
      const port = await freePort()
      const configFile = join(work, 'oneflow-relay.json')
      writeFileSync(
        configFile,
        JSON.stringify({
          listen: { host: '127.0.0.1', port: 'env:PORT' },
          queue: 'env:RELAY_QUEUE',
          oneflow: { apiBaseUrl: oneflow.url },
          sources: [{ name: 'web', writeKey: 'env:SEGMENT_WRITE_KEY', projectApiKey: 'env:ONEFLOW_PROJECT_API_KEY' }]
        })
      )
      const started = podman(
        'run',
        '--detach',
        '--name',
        'relay-postgres',
        '--network',
        'host',
        '--volume',
        `${configFile}:/etc/oneflow-relay/oneflow-relay.json:ro`,
        '--env',
        `PORT=${port}`,
        '--env',
        `RELAY_QUEUE=${pg.url}`,
        '--env',
        `SEGMENT_WRITE_KEY=${WRITE_KEY}`,
        '--env',
        `ONEFLOW_PROJECT_API_KEY=${PROJECT_KEY}`,
        IMAGE
      )
      expect(started.status, started.out).toBe(0)
      await waitReady(port)
      const events = Array.from({ length: 30 }, (_, i) => track(i))
      expect((await send(port, events.slice(0, 15))).status).toBe(200)
      expect((await send(port, events.slice(15))).status).toBe(200)
      await oneflow.waitFor((accepted) => accepted.length >= 30, 60_000)
      const seen = oneflow.accepted.map((m) => (m.body.properties as { i: number }).i)
      expect([...seen].sort((a, b) => a - b)).toEqual(events.map((_, i) => i))
      for (const user of ['user-0', 'user-1', 'user-2']) {
        const order = oneflow.accepted
          .filter((m) => m.body.user_id === user)
          .map((m) => (m.body.properties as { i: number }).i)
        expect(order).toEqual([...order].sort((a, b) => a - b))
        expect(order.length).toBe(10)
      }
      expect(podman('stop', '--time', '30', 'relay-postgres').status).toBe(0)
      expect(podman('inspect', 'relay-postgres', '--format', '{{.State.ExitCode}}').stdout.trim()).toBe('0')
    })
  })
})

describe('the systemd unit', () => {
  it('passes `systemd-analyze verify` without a warning', () => {
    const r = spawnSync('systemd-analyze', ['verify', join(root, 'deploy/oneflow-relay.service')], {
      encoding: 'utf8'
    })
    expect(r.status, r.stderr).toBe(0)
    expect(`${r.stdout}${r.stderr}`.trim()).toBe('')
  })
})
