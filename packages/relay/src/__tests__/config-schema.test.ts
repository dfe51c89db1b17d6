/**
 * The config's one shape: relay-config.schema.json (published for editors) is what config-schema.ts says, and
 * it agrees with parseConfig on what a config may hold: the README's example, the container image's config and a
 * config with every key pass both; an unknown key or a value of the wrong type anywhere fails both.
 * `pnpm --filter @oneflow-seg/relay schema` writes the file again after a change to the shape.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Value } from '@sinclair/typebox/value'
import { describe, expect, it } from 'vitest'
import { ConfigError, parseConfig, RelayConfigSchema, type RelayConfigFile } from '../config'
import { relayConfigJsonSchema } from '../config-schema'

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const repo = join(pkg, '..', '..')
const SCHEMA_FILE = join(pkg, 'relay-config.schema.json')
const KEY = 'a_write_key_of_24_chars_or_more'
const TOKEN = 'a_webhook_token_of_24_chars_ok'
const ENV = {
  SEGMENT_WRITE_KEY: 'wk_from_env_0123456789abcdef',
  ONEFLOW_PROJECT_API_KEY: 'pk_from_env',
  HOST: '0.0.0.0',
  PORT: '8080',
  RELAY_QUEUE: 'sqlite:/tmp/relay.db'
}

const parses = (config: unknown) => {
  try {
    parseConfig(config, { env: ENV, baseDir: '/tmp' })
    return true
  } catch (error) {
    if (error instanceof ConfigError) return false
    throw error
  }
}

const EVERY_KEY: RelayConfigFile = {
  $schema: './node_modules/@oneflow-seg/relay/relay-config.schema.json',
  listen: { host: '127.0.0.1', port: 8787, ops: { host: '127.0.0.1', port: 9090 } },
  queue: 'postgres://relay@127.0.0.1/relay',
  oneflow: {
    apiBaseUrl: 'https://api.1flow.app/v1',
    mode: 'single',
    maxRequestsPerSecond: 100,
    concurrency: 4,
    requestTimeoutMs: 5000
  },
  limits: {
    diskCapBytes: 1024 ** 3,
    dedupWindowHours: 48,
    giveUpAfterHours: 6,
    deadLetterRetentionDays: 7,
    deadLetterMaxBytes: 1024 ** 3,
    requestTimeoutMs: 20_000,
    diskReserveBytes: 0
  },
  shutdownGraceMs: 10_000,
  statusPage: { enabled: true },
  sources: [
    {
      name: 'web',
      writeKey: KEY,
      projectApiKey: 'env:ONEFLOW_PROJECT_API_KEY',
      mappings: [{ name: 'All tracks', subscribe: 'type = "track"', partnerAction: 'trackEvent', enabled: true }],
      consentCategories: ['Analytics'],
      webhookToken: TOKEN,
      segment: { writeKey: 'env:SEGMENT_WRITE_KEY', host: 'https://api.segment.io', eventName: 'Survey Answered' }
    }
  ]
}

/** The relay config examples in README.md's "### Config" section (```json blocks). */
function readmeConfig(): unknown {
  const readme = readFileSync(join(repo, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('### Config'))
  const block = /```json\n([\s\S]*?)\n```/.exec(section)?.[1]
  if (!block) throw new Error('README.md has no ```json block under "### Config"')
  return JSON.parse(block)
}

describe('relay-config.schema.json', () => {
  it('is what config-schema.ts says (run `pnpm --filter @oneflow-seg/relay schema` after changing the shape)', () => {
    const made = `${JSON.stringify(relayConfigJsonSchema(), null, 2)}\n`
    if (process.env.ONEFLOW_WRITE_SCHEMA === '1') writeFileSync(SCHEMA_FILE, made)
    expect(readFileSync(SCHEMA_FILE, 'utf8')).toBe(made)
  })

  it('is published with the package, as a subpath editors can point $schema at', () => {
    const manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as {
      files: string[]
      exports: Record<string, unknown>
    }
    expect(manifest.files).toContain('relay-config.schema.json')
    expect(manifest.exports['./relay-config.schema.json']).toBe('./relay-config.schema.json')
  })
})

describe('the schema and parseConfig agree', () => {
  it.each([
    ["README.md's example", readmeConfig()],
    ["the container image's config", JSON.parse(readFileSync(join(repo, 'deploy/oneflow-relay.json'), 'utf8'))],
    ['a config with every key', EVERY_KEY],
    ['the least a config may be', { sources: [{ writeKey: KEY, projectApiKey: 'pk' }] }]
  ])('%s passes both', (_name, config) => {
    expect([...Value.Errors(RelayConfigSchema, config)].map((e) => `${e.path}: ${e.message}`)).toEqual([])
    expect(parses(config)).toBe(true)
  })

  /** A copy of EVERY_KEY with the value at `path` (dot-separated) set, or deleted when `value` is undefined. */
  const withChange = (path: string, value: unknown) => {
    const copy = structuredClone(EVERY_KEY) as unknown as Record<string, unknown>
    const keys = path.split('.')
    const last = keys.pop()!
    const parent = keys.reduce((o, k) => o[k] as Record<string, unknown>, copy)
    if (value === undefined) delete parent[last]
    else parent[last] = value
    return copy
  }
  it.each([
    ['an unknown top-level key', withChange('sourcez', [])],
    ['an unknown listen key', withChange('listen.hots', 'x')],
    ['an unknown listen.ops key', withChange('listen.ops.path', '/x')],
    ['an unknown oneflow key', withChange('oneflow.rate', 1)],
    ['an unknown limits key', withChange('limits.maxQueuedEvents', 1)],
    ['an unknown statusPage key', withChange('statusPage.path', '/s')],
    ['an unknown source key', withChange('sources.0.projectKey', 'x')],
    ['an unknown segment key', withChange('sources.0.segment.write_key', 'x')],
    ['no sources', withChange('sources', [])],
    ['a source without projectApiKey', withChange('sources.0.projectApiKey', undefined)],
    ['a port that is text', withChange('listen.port', '8787')],
    ['a fractional rate', withChange('oneflow.maxRequestsPerSecond', 0.5)],
    ["a rate above 1Flow's limit", withChange('oneflow.maxRequestsPerSecond', 501)],
    ['a dedup window under 24 h', withChange('limits.dedupWindowHours', 1)],
    ['an unknown mode', withChange('oneflow.mode', 'fast')],
    ['statusPage.enabled as text', withChange('statusPage.enabled', 'yes')],
    ['a queue that is neither', withChange('queue', 'mysql://x')],
    ['a source name with a space', withChange('sources.0.name', 'my web')],
    ['a mapping without partnerAction', withChange('sources.0.mappings.0.partnerAction', undefined)],
    ['a webhook token too short for a URL secret', withChange('sources.0.webhookToken', 'short')],
    ['an empty consent category', withChange('sources.0.consentCategories', [''])]
  ])('%s fails both', (_name, config) => {
    expect(Value.Check(RelayConfigSchema, config)).toBe(false)
    expect(parses(config)).toBe(false)
  })
})
