/**
 * What ships, checked as it ships: publint and are-the-types-wrong on each published package; `pnpm pack`
 * tarballs installed into a fresh project (with the pnpm settings README tells users to add) and imported
 * through Node's ESM and CJS loaders and TypeScript; and `changeset version` producing the changelogs.
 */
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const PUBLISHED = ['core', 'actions-destination', 'ajs-plugin', 'relay'] as const
const bin = (name: string) => join(root, 'node_modules', '.bin', name)

function run(cmd: string, args: string[], cwd: string): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, CI: 'true', FORCE_COLOR: '0', NO_COLOR: '1' }, timeout: 240_000 })
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

describe('packed tarballs in a fresh project', () => {
  const project = mkdtempSync(join(tmpdir(), 'oneflow-release-'))
  const tarballs: Record<string, string> = {}

  beforeAll(() => {
    const packs = join(project, 'packs')
    for (const pkg of PUBLISHED) {
      const packed = run('pnpm', ['pack', '--pack-destination', packs], join(root, 'packages', pkg))
      expect(packed.status, packed.out).toBe(0)
    }
    for (const file of readdirSync(packs)) {
      const name = `@oneflow-seg/${file.replace(/^oneflow-seg-/, '').replace(/-\d+\.\d+\.\d+\.tgz$/, '')}`
      tarballs[name] = `file:./packs/${file}`
    }
    // What README asks a pnpm user to add for actions-core (liquidjs, fast-uri) and for better-sqlite3.
    writeFileSync(
      join(project, 'pnpm-workspace.yaml'),
      [
        'allowBuilds:',
        '  better-sqlite3: true',
        '  esbuild: true',
        'packageExtensions:',
        "  '@segment/actions-core':",
        '    dependencies:',
        '      liquidjs: 10.30.1',
        'overrides:',
        '  fast-uri: 3.1.5',
        ...Object.entries(tarballs).map(([name, spec]) => `  '${name}': ${spec}`),
        ''
      ].join('\n')
    )
    copyFileSync(join(root, '.pnpmfile.cjs'), join(project, '.pnpmfile.cjs'))
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true, dependencies: { ...tarballs, '@segment/analytics-next': '1.84.3', '@segment/actions-core': '3.170.0' }, devDependencies: { typescript: '5.9.3', '@types/node': '20.19.43' } }, null, 2)
    )
    const installed = run('pnpm', ['install', '--prefer-offline', '--no-frozen-lockfile'], project)
    expect(installed.status, installed.out).toBe(0)
  })

  it('imports every entry through ESM', () => {
    const script = `
      import { mapWithPresets, resolveSettings } from '@oneflow-seg/core'
      import { validateSubscriptions } from '@oneflow-seg/core/subscriptions'
      import { compileSubscriptions } from '@oneflow-seg/core/mapping'
      import cloud, { destination as cloudNamed } from '@oneflow-seg/actions-destination/cloud'
      import browserFactory, { destination as browser } from '@oneflow-seg/actions-destination/browser'
      import { oneFlow } from '@oneflow-seg/ajs-plugin'
      import { createRelay, parseConfig } from '@oneflow-seg/relay'
      const results = mapWithPresets({ type: 'track', event: 'E', userId: 'u' })
      if (results[0].outcome.kind !== 'track') throw new Error('core')
      if (validateSubscriptions([{ subscribe: 'type = "track"', partnerAction: 'trackEvent' }]).length !== 1) throw new Error('subscriptions')
      if (compileSubscriptions([{ subscribe: 'type = "track"', partnerAction: 'trackEvent' }]).length !== 1) throw new Error('mapping')
      if (cloud !== cloudNamed || cloud.slug !== 'actions-1flow-cloud') throw new Error('cloud')
      if (browser.slug !== 'actions-1flow' || browserFactory.pluginName !== '1Flow Web (Actions)') throw new Error('browser')
      if (oneFlow({ projectApiKey: 'k' }).name !== '1Flow') throw new Error('plugin')
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
      const cloud = require('@oneflow-seg/actions-destination/cloud'), browser = require('@oneflow-seg/actions-destination/browser')
      const plugin = require('@oneflow-seg/ajs-plugin'), relay = require('@oneflow-seg/relay')
      const { Destination } = require('@segment/actions-core')
      new Destination(cloud.destination)
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
      import cloud from '@oneflow-seg/actions-destination/cloud'
      import { destination as browser } from '@oneflow-seg/actions-destination/browser'
      import { oneFlow, type OneFlowPluginOptions } from '@oneflow-seg/ajs-plugin'
      import { createRelay, type RelayConfig, type Queue } from '@oneflow-seg/relay'
      const payload: TrackEventPayload = { event_name: 'E' }
      const options: OneFlowPluginOptions = { projectApiKey: 'k', bufferLimit: 10 }
      const subs: CompiledSubscription[] = compileSubscriptions(validateSubscriptions([]))
      export const all: unknown[] = [payload, options, subs, cloud.slug, browser.name, oneFlow, createRelay, mapWithPresets({}) as unknown as Command[]]
      export type Exposed = [ResolvedSettings, RelayConfig, Queue]
      `
    )
    const r = run(join(project, 'node_modules', '.bin', 'tsc'), ['--noEmit', '--strict', '--skipLibCheck', '--module', resolution === 'node16' ? 'node16' : 'esnext', '--moduleResolution', resolution, '--target', 'es2022', '--types', 'node', 'check.mts'], project)
    expect(r.out).toBe('')
    expect(r.status).toBe(0)
  })

  it('ships the relay CLI as a bin', () => {
    const r = run(join(project, 'node_modules', '.bin', 'oneflow-relay'), ['--version'], project)
    expect(r.out.trim()).toBe(JSON.parse(readFileSync(join(root, 'packages', 'relay', 'package.json'), 'utf8')).version)
  })
})

describe('versioning', () => {
  it('changeset version bumps core and every adapter together and writes their CHANGELOG.md', () => {
    const clone = mkdtempSync(join(tmpdir(), 'oneflow-version-'))
    expect(run('git', ['clone', '-q', root, clone], root).status).toBe(0)
    // Uncommitted changesets in the working tree count too.
    for (const file of readdirSync(join(root, '.changeset'))) copyFileSync(join(root, '.changeset', file), join(clone, '.changeset', file))
    symlinkSync(join(root, 'node_modules'), join(clone, 'node_modules'))
    const versioned = run(process.execPath, [join(root, 'node_modules', '@changesets', 'cli', 'bin.js'), 'version'], clone)
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
