/**
 * What ships, checked as users get it: publint and are-the-types-wrong on each published package; the packed
 * tarballs installed into an empty project with plain npm and with pnpm, default settings — no overrides, no
 * packageExtensions, no aliases — and then used: every entry through ESM, CJS and TypeScript, the relay's CLI
 * (check-config, start, /health/ready), cloud mode's Destination delivering to a local stand-in for 1Flow, and
 * browser bundles of the plugin (custom mappings) and of device mode, built by the bundlers users have and run in
 * Chromium against a recording 1Flow SDK. Last, `changeset version` producing the changelogs.
 */
import { spawn, spawnSync } from 'node:child_process'
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeOneFlowApi, launchChromium, openPage, PageServer, sdkHasCalls } from '@oneflow-seg/testkit'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const PUBLISHED = ['core', 'actions-destination', 'ajs-plugin', 'relay'] as const
const bin = (name: string) => join(root, 'node_modules', '.bin', name)
const version = (pkg: string) =>
  (JSON.parse(readFileSync(join(root, 'packages', pkg, 'package.json'), 'utf8')) as { version: string }).version

/** Like `run`, without blocking this process (for scripts that talk to a server running here). */
function runAsync(cmd: string, args: string[], cwd: string): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, CI: 'true', FORCE_COLOR: '0', NO_COLOR: '1' } })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    child.on('close', (status) => resolve({ status, out }))
  })
}

function run(
  cmd: string,
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = {}
): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, CI: 'true', FORCE_COLOR: '0', NO_COLOR: '1', ...env },
    timeout: 280_000
  })
  return { status: r.status, out: `${r.stdout}${r.stderr}` }
}

describe('publint and are-the-types-wrong', () => {
  it.each(PUBLISHED)('%s', (pkg) => {
    const dir = join(root, 'packages', pkg)
    const lint = run(bin('publint'), ['--strict', dir], root)
    expect(lint.out).toContain('All good!')
    expect(lint.status).toBe(0)
    const types = run(bin('attw'), ['--pack', dir, '--format', 'ascii'], root)
    expect(types.out).toContain('No problems found')
    expect(types.status).toBe(0)
  })
})

/** The tarballs, packed once for both package managers. */
const packs = mkdtempSync(join(tmpdir(), 'oneflow-packs-'))
const tarballs: Record<string, string> = {}
beforeAll(() => {
  for (const pkg of PUBLISHED) {
    const packed = run('pnpm', ['pack', '--pack-destination', packs], join(root, 'packages', pkg))
    expect(packed.status, packed.out).toBe(0)
  }
  for (const file of readdirSync(packs))
    tarballs[`@oneflow-seg/${file.replace(/^oneflow-seg-/, '').replace(/-\d+\.\d+\.\d+\.tgz$/, '')}`] = join(
      packs,
      file
    )
  expect(Object.keys(tarballs).sort()).toEqual(PUBLISHED.map((p) => `@oneflow-seg/${p}`).sort())
})

/** What a user adds beside our packages: Analytics.js for the browser, the tools for the checks. */
const THIRD_PARTY = {
  '@segment/analytics-next': '1.84.3',
  typescript: '5.9.3',
  '@types/node': '20.19.43',
  esbuild: '0.27.7'
}

const MAPPINGS = [
  {
    name: 'Sign-ups',
    subscribe: 'type = "track" and event = "Signed Up"',
    partnerAction: 'trackEvent',
    mapping: {
      event_name: { '@path': '$.event' },
      userId: { '@path': '$.userId' },
      properties: { '@path': '$.properties' }
    }
  }
]

/** The two browser pages a user would write: the plugin with custom mappings, and device mode with local settings. */
const PAGES = {
  plugin: `
    import { AnalyticsBrowser } from '@segment/analytics-next'
    import { oneFlow } from '@oneflow-seg/ajs-plugin'
    const [analytics] = await AnalyticsBrowser.load({ writeKey: 'wk', cdnSettings: { integrations: {} } }, { disableClientPersistence: true })
    await analytics.register(oneFlow({ projectApiKey: 'pk', mappings: ${JSON.stringify(MAPPINGS)} }))
    window.harness = {}
    await analytics.track('Signed Up', { plan: 'pro' })
  `,
  device: `
    import { AnalyticsBrowser } from '@segment/analytics-next'
    import oneFlowWebActions from '@oneflow-seg/actions-destination/browser'
    const subscriptions = [{ name: 'Track Event', subscribe: 'type = "track"', partnerAction: 'trackEvent', enabled: true, mapping: { event_name: { '@path': '$.event' }, properties: { '@path': '$.properties' } } }]
    const remotePlugins = [{ name: '1Flow Web (Actions)', creationName: '1Flow Web (Actions)', libraryName: '1flowDestination', url: 'https://unused', settings: { projectApiKey: 'pk', subscriptions } }]
    const [analytics] = await AnalyticsBrowser.load({ writeKey: 'wk', cdnSettings: { integrations: {}, remotePlugins }, plugins: [oneFlowWebActions] }, { disableClientPersistence: true })
    window.harness = {}
    await analytics.track('Signed Up', { plan: 'pro' })
  `
}

describe.each(['npm', 'pnpm'] as const)(
  'the tarballs installed with %s, default settings, into an empty project',
  (manager) => {
    const project = mkdtempSync(join(tmpdir(), `oneflow-${manager}-`))
    let fake: FakeOneFlowApi
    let browser: Browser

    beforeAll(async () => {
      // Our packages depend on each other by version; the registry is played by the tarballs (and nothing else is
      // pinned: every third-party package resolves as it would for a user).
      const ours = Object.fromEntries(Object.entries(tarballs).map(([name, file]) => [name, `file:${file}`]))
      const deps = { ...ours, ...THIRD_PARTY, ...(manager === 'npm' && { vite: '8.3.8' }) }
      writeFileSync(
        join(project, 'package.json'),
        JSON.stringify(
          {
            name: 'consumer',
            private: true,
            type: 'module',
            dependencies: deps,
            ...(manager === 'npm' && { overrides: ours })
          },
          null,
          2
        )
      )
      if (manager === 'pnpm') {
        // pnpm 12 runs no install script unless allowed (better-sqlite3 builds itself); the pnpmfile only points
        // node-gyp at this machine's Node headers (no network for them here).
        const overrides = Object.entries(ours).map(([name, spec]) => `  '${name}': '${spec}'`)
        writeFileSync(
          join(project, 'pnpm-workspace.yaml'),
          ['allowBuilds:', '  better-sqlite3: true', '  esbuild: true', 'overrides:', ...overrides, ''].join('\n')
        )
        copyFileSync(join(root, '.pnpmfile.cjs'), join(project, '.pnpmfile.cjs'))
      }
      const installed =
        manager === 'npm'
          ? run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], project)
          : run('pnpm', ['install', '--prefer-offline'], project)
      if (installed.status !== 0)
        throw new Error(`${manager} install failed (${installed.status}):\n${installed.out.slice(-4000)}`)
      fake = await FakeOneFlowApi.start({ apiKeys: ['pk'] })
      browser = await launchChromium()
    })
    afterAll(async () => {
      await browser?.close()
      await fake?.close()
    })

    it('imports every entry through ESM', () => {
      const script = `
      import { mapWithPresets, resolveSettings } from '@oneflow-seg/core'
      import { validateSubscriptions } from '@oneflow-seg/core/subscriptions'
      import { compileSubscriptions, mapWithSubscriptions } from '@oneflow-seg/core/mapping'
      import { resolveSdkSettings, ChunkLoadError } from '@oneflow-seg/core/browser-start'
      import { presetOutcome } from '@oneflow-seg/core/browser'
      import cloud, { destination as cloudNamed, Destination } from '@oneflow-seg/actions-destination/cloud'
      import browserFactory, { destination as browser } from '@oneflow-seg/actions-destination/browser'
      import { oneFlow, VERSION } from '@oneflow-seg/ajs-plugin'
      import { createRelay, parseConfig } from '@oneflow-seg/relay'
      const results = mapWithPresets({ type: 'track', event: 'E', userId: 'u' })
      if (results[0].outcome.kind !== 'track') throw new Error('core')
      if (resolveSdkSettings({ projectApiKey: 'k' }).loadTimeoutMs !== 10000 || new ChunkLoadError('x', 'y').code !== 'CHUNK_LOAD_FAILED') throw new Error('browser-start')
      if (presetOutcome({ type: 'track', event: 'E' }).kind !== 'track') throw new Error('core/browser')
      if (validateSubscriptions([{ subscribe: 'type = "track"', partnerAction: 'trackEvent' }]).length !== 1) throw new Error('subscriptions')
      const compiled = compileSubscriptions(${JSON.stringify(MAPPINGS)})
      // mapping-kit's @liquid directive runs in Node: liquidjs is there.
      const liquid = mapWithSubscriptions({ type: 'track', event: 'Signed Up', properties: { plan: 'pro' } }, compileSubscriptions([{ subscribe: 'type = "track"', partnerAction: 'trackEvent', mapping: { event_name: { '@liquid': '{{ event | upcase }}' } } }]))
      if (liquid[0].outcome.event !== 'SIGNED UP' || compiled.length !== 1) throw new Error('mapping ' + JSON.stringify(liquid))
      if (cloud !== cloudNamed || cloud.slug !== 'actions-1flow-cloud' || typeof Destination !== 'function') throw new Error('cloud')
      if (browser.slug !== 'actions-1flow' || browserFactory.pluginName !== '1Flow Web (Actions)') throw new Error('browser')
      if (oneFlow({ projectApiKey: 'k' }).name !== '1Flow' || VERSION !== ${JSON.stringify(version('ajs-plugin'))}) throw new Error('plugin')
      if (typeof createRelay !== 'function' || parseConfig({ sources: [{ writeKey: 'w', projectApiKey: 'p' }] }).listen.port !== 8787) throw new Error('relay')
      console.log('esm ok', resolveSettings({ projectApiKey: 'k' }).apiBaseUrl)
    `
      const r = run(process.execPath, ['--input-type=module', '-e', script], project)
      expect(r.out).toContain('esm ok https://api.1flow.app/v1')
      expect(r.status).toBe(0)
    })

    it('requires every entry through CJS', () => {
      const script = `
      const core = require('@oneflow-seg/core'), mapping = require('@oneflow-seg/core/mapping'), subs = require('@oneflow-seg/core/subscriptions')
      const start = require('@oneflow-seg/core/browser-start'), coreBrowser = require('@oneflow-seg/core/browser')
      if (typeof start.PreReadyBuffer !== 'function' || typeof coreBrowser.loadOneFlowSdk !== 'function') throw new Error('browser entries')
      const cloud = require('@oneflow-seg/actions-destination/cloud'), browser = require('@oneflow-seg/actions-destination/browser')
      const plugin = require('@oneflow-seg/ajs-plugin'), relay = require('@oneflow-seg/relay')
      new cloud.Destination(cloud.destination)
      if (core.presets.length !== 2 || typeof mapping.mapWithSubscriptions !== 'function' || typeof subs.lintFql !== 'function') throw new Error('core')
      if (browser.destination.name !== '1Flow Web (Actions)' || typeof plugin.oneFlow !== 'function' || typeof relay.SqliteQueue !== 'function') throw new Error('adapters')
      console.log('cjs ok')
    `
      const r = run(process.execPath, ['-e', script], project)
      expect(r.out).toContain('cjs ok')
      expect(r.status).toBe(0)
    })

    it.each(['node16', 'bundler'] as const)('type-checks through TypeScript (moduleResolution %s)', (resolution) => {
      writeFileSync(
        join(project, 'check.mts'),
        `
      import { mapWithPresets, type Command, type ResolvedSettings, type TrackEventPayload } from '@oneflow-seg/core'
      import { compileSubscriptions, type CompiledSubscription } from '@oneflow-seg/core/mapping'
      import { validateSubscriptions } from '@oneflow-seg/core/subscriptions'
      import cloud, { Destination } from '@oneflow-seg/actions-destination/cloud'
      import { destination as browser } from '@oneflow-seg/actions-destination/browser'
      import { oneFlow, type OneFlowPluginOptions } from '@oneflow-seg/ajs-plugin'
      import { createRelay, type RelayConfig, type Queue } from '@oneflow-seg/relay'
      const payload: TrackEventPayload = { event_name: 'E' }
      const options: OneFlowPluginOptions = { projectApiKey: 'k', bufferLimit: 10 }
      const subs: CompiledSubscription[] = compileSubscriptions(validateSubscriptions([]))
      const running = new Destination(cloud)
      export const all: unknown[] = [payload, options, subs, cloud.slug, browser.name, oneFlow, createRelay, running, mapWithPresets({}) as unknown as Command[]]
      export type Exposed = [ResolvedSettings, RelayConfig, Queue]
      `
      )
      const r = run(
        join(project, 'node_modules', '.bin', 'tsc'),
        [
          '--noEmit',
          '--strict',
          '--skipLibCheck',
          '--module',
          resolution === 'node16' ? 'node16' : 'esnext',
          '--moduleResolution',
          resolution,
          '--target',
          'es2022',
          '--types',
          'node',
          'check.mts'
        ],
        project
      )
      expect(r.out).toBe('')
      expect(r.status).toBe(0)
    })

    it('cloud mode: Destination validates payloads (a name with spaces and parentheses) and delivers onEvent and onBatch to 1Flow', async () => {
      fake.reset()
      const script = `
      import { Destination, destination } from '@oneflow-seg/actions-destination/cloud'
      import { presets } from '@oneflow-seg/core'
      const oneFlow = new Destination(destination)
      const settings = { projectApiKey: 'pk', apiBaseUrl: ${JSON.stringify(fake.url)}, subscriptions: presets.map(({ name, subscribe, partnerAction, mapping }) => ({ name, subscribe, partnerAction, mapping })) }
      const one = await oneFlow.onEvent({ type: 'track', event: 'Signed Up', userId: 'user-1', properties: { plan: 'pro' } }, settings)
      // Payload validation refuses a track without an event name, with the framework's message.
      const refused = await oneFlow.onEvent({ type: 'track', userId: 'user-1' }, settings).then(() => 'sent', (e) => e.status + ' ' + e.message)
      const batch = await oneFlow.onBatch([{ type: 'track', event: 'A', userId: 'u2' }, { type: 'track', event: 'B', userId: 'u3' }], settings)
      console.log(JSON.stringify({ one: one.map((r) => r.output), refused, batch: batch[0].multistatus.map((e) => e.status) }))
    `
      const r = await runAsync(process.execPath, ['--input-type=module', '-e', script], project)
      expect(r.status, r.out).toBe(0)
      expect(JSON.parse(r.out.trim().split('\n').at(-1) as string)).toEqual({
        // The track preset ran; the identify preset did not match.
        one: ['Mappings resolved', 'Payload validated', 'Action Executed', 'not subscribed'],
        refused: "400 The root value is missing the required field 'event_name'.",
        batch: [200, 200]
      })
      expect(fake.accepted.map((m) => [m.via, m.body.event])).toEqual([
        ['/track', 'Signed Up'],
        ['/batch', 'A'],
        ['/batch', 'B']
      ])
    })

    it('the relay CLI: --version, check-config, start answering /health/ready, events delivered, SIGTERM', async () => {
      fake.reset()
      const cli = join(project, 'node_modules', '.bin', 'oneflow-relay')
      expect(run(cli, ['--version'], project).out.trim()).toBe(version('relay'))
      const port = 20_000 + Math.floor(Math.random() * 20_000)
      writeFileSync(
        join(project, 'oneflow-relay.json'),
        JSON.stringify({
          listen: { host: '127.0.0.1', port },
          oneflow: { apiBaseUrl: fake.url },
          sources: [{ name: 'web', writeKey: 'env:RELEASE_WRITE_KEY', projectApiKey: 'pk', mappings: MAPPINGS }]
        })
      )
      const env = { RELEASE_WRITE_KEY: 'wk-release' }
      const checked = run(cli, ['check-config', '--config', 'oneflow-relay.json'], project, env)
      expect(checked.status, checked.out).toBe(0)
      expect(checked.out).toContain('1 custom mapping(s)')
      const relay = spawn(cli, ['start', '--config', 'oneflow-relay.json'], {
        cwd: project,
        env: { ...process.env, ...env },
        stdio: 'ignore'
      })
      const exited = new Promise<number | null>((resolve) => relay.on('exit', resolve))
      try {
        const url = `http://127.0.0.1:${port}`
        let ready = 0
        for (let i = 0; i < 150 && ready !== 200; i++) {
          ready = await fetch(`${url}/health/ready`).then(
            (res) => res.status,
            () => 0
          )
          if (ready !== 200) await new Promise((r) => setTimeout(r, 100))
        }
        expect(ready).toBe(200)
        const sent = await fetch(`${url}/v1/t`, {
          method: 'POST',
          headers: { 'content-type': 'text/plain' },
          body: JSON.stringify({
            writeKey: 'wk-release',
            userId: 'u1',
            event: 'Signed Up',
            properties: { plan: 'pro' }
          })
        })
        expect(sent.status).toBe(200)
        await fake.waitFor((accepted) => accepted.length === 1)
        expect(fake.accepted[0]?.body).toMatchObject({ event: 'Signed Up', user_id: 'u1', properties: { plan: 'pro' } })
      } finally {
        relay.kill('SIGTERM')
      }
      expect(await exited).toBe(0)
    }, 60_000)

    const bundlers = manager === 'npm' ? (['esbuild', 'vite'] as const) : (['esbuild'] as const)
    describe.each(bundlers)('browser bundles built by %s', (bundler) => {
      it.each(Object.keys(PAGES) as Array<keyof typeof PAGES>)(
        '%s: loads in Chromium and sends to 1Flow’s SDK',
        async (page) => {
          const dir = join(project, `page-${bundler}-${page}`)
          mkdirSync(dir, { recursive: true })
          writeFileSync(join(dir, 'page.js'), PAGES[page])
          const out = join(dir, 'out')
          const built =
            bundler === 'esbuild'
              ? run(
                  join(project, 'node_modules', '.bin', 'esbuild'),
                  [
                    'page.js',
                    '--bundle',
                    '--splitting',
                    '--format=esm',
                    '--platform=browser',
                    '--minify',
                    '--entry-names=entry',
                    '--outdir=out'
                  ],
                  dir
                )
              : (writeFileSync(
                  join(dir, 'vite.config.mjs'),
                  `export default { logLevel: 'error', build: { outDir: 'out', assetsDir: '', modulePreload: false, rollupOptions: { input: { entry: 'page.js' }, output: { entryFileNames: '[name].js', chunkFileNames: '[name]-[hash].js' } } } }`
                ),
                run(join(project, 'node_modules', '.bin', 'vite'), ['build'], dir))
          expect(built.status, built.out).toBe(0)
          const files = new Map(
            readdirSync(out)
              .filter((f) => f.endsWith('.js'))
              .map((f) => [f, readFileSync(join(out, f), 'utf8')])
          )
          expect(files.has('entry.js')).toBe(true)
          const server = await PageServer.start(files)
          const opened = await openPage(browser, server, {})
          try {
            await opened.page.waitForFunction(sdkHasCalls, 1, { timeout: 15_000 })
            const calls = await opened.page.evaluate(
              () => (window as unknown as { __oneflowRecorder: { calls: unknown[] } }).__oneflowRecorder.calls
            )
            expect(calls).toEqual([['logEvent', 'Signed Up', { plan: 'pro' }]])
            expect(opened.sdkRequests).toEqual(['https://1flow.app/js/1flow.js'])
          } finally {
            await opened.close()
            await server.close()
          }
        }
      )
    })
  }
)

describe('versioning', () => {
  it('changeset version bumps core and every adapter together and writes their CHANGELOG.md', () => {
    const clone = mkdtempSync(join(tmpdir(), 'oneflow-version-'))
    expect(run('git', ['clone', '-q', root, clone], root).status).toBe(0)
    // Uncommitted changesets in the working tree count too.
    for (const file of readdirSync(join(root, '.changeset')))
      copyFileSync(join(root, '.changeset', file), join(clone, '.changeset', file))
    symlinkSync(join(root, 'node_modules'), join(clone, 'node_modules'))
    const versioned = run(
      process.execPath,
      [join(root, 'node_modules', '@changesets', 'cli', 'bin.js'), 'version'],
      clone
    )
    expect(versioned.status, versioned.out).toBe(0)
    const versions = new Set<string>()
    for (const pkg of PUBLISHED) {
      const changelog = join(clone, 'packages', pkg, 'CHANGELOG.md')
      expect(existsSync(changelog), changelog).toBe(true)
      expect(readFileSync(changelog, 'utf8')).toContain('First release')
      versions.add(JSON.parse(readFileSync(join(clone, 'packages', pkg, 'package.json'), 'utf8')).version)
    }
    expect(versions.size).toBe(1)
  })
})
