/**
 * The config as an operator writes it: every numeric setting is a whole number within a range (a test per
 * key), and nothing a config holds — a write key in a broken file, a PostgreSQL password in any place a URL can
 * carry one — is ever printed back.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  ConfigError,
  displayQueue,
  jsonSyntaxError,
  loadConfig,
  NUMERIC_SETTINGS,
  parseConfig,
  type NumericSetting
} from '../config'
import { tempDir } from './helpers'

const SOURCE = { writeKey: 'wk_config_test', projectApiKey: 'pk_config_test' }

/** A config with `value` at `path` (e.g. "limits.diskCapBytes"). */
function withSetting(path: string, value: unknown): Record<string, unknown> {
  const config: Record<string, unknown> = { sources: [SOURCE] }
  const keys = path.split('.')
  let at = config
  for (const key of keys.slice(0, -1)) at = (at[key] = {}) as Record<string, unknown>
  at[keys.at(-1) as string] = value
  return config
}

const problemsOf = (raw: unknown, env: NodeJS.ProcessEnv = {}): Array<{ key: string; message: string }> => {
  try {
    parseConfig(raw, { env })
    return []
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    return [...error.problems]
  }
}

describe('every numeric setting is a whole number within its range', () => {
  it.each(Object.entries(NUMERIC_SETTINGS) as Array<[NumericSetting, { min: number; max: number }]>)(
    '%s',
    (path, { min, max }) => {
      // The edges are taken, and parsed back as given.
      for (const ok of [min, max]) expect(problemsOf(withSetting(path, ok))).toEqual([])
      const inRange = Math.min(max, min + 1)
      for (const bad of [min - 1, max + 1, inRange + 0.5, '10', null, Number.NaN]) {
        const problems = problemsOf(withSetting(path, bad))
        expect(problems, `${path} = ${String(bad)}`).toEqual([
          { key: path, message: expect.stringMatching(new RegExp(`^must be a whole number from ${min} to ${max}`)) }
        ])
      }
    }
  )

  it('names the value it refused, so 0.5 requests/s is not a mystery', () => {
    expect(problemsOf(withSetting('oneflow.maxRequestsPerSecond', 0.5))[0]?.message).toBe(
      'must be a whole number from 1 to 500, requests/s per 1Flow project (1Flow asks for at most 500) (got 0.5)'
    )
    expect(problemsOf(withSetting('oneflow.requestTimeoutMs', 2500.5))[0]?.message).toMatch(/\(got 2500\.5\)$/)
  })
})

describe('secrets are never printed', () => {
  it.each([
    ['postgres://relay:s3cret@db:5432/q', 'postgres://relay:***@db:5432/q'],
    ['postgresql://db:5432/q?user=relay&password=s3cret', 'postgresql://db:5432/q?user=relay&password=***'],
    ['postgres://db/q?sslpassword=s3cret&sslmode=require', 'postgres://db/q?sslpassword=***&sslmode=require'],
    ['postgres://relay:s3cret@db/q?password=s3cret', 'postgres://relay:***@db/q?password=***'],
    ['postgres://relay:s3cret@[db/q', 'postgres://*** (not a valid URL)'],
    ['sqlite:/var/lib/relay.db', 'sqlite:/var/lib/relay.db']
  ])('a queue URL %s is shown as %s', (url, shown) => {
    expect(displayQueue(url)).toBe(shown)
  })

  it('a config file with a JSON syntax error is reported by line and column, never by its content', () => {
    const file = join(tempDir(), 'oneflow-relay.json')
    writeFileSync(file, '{\n  "sources": [{ "writeKey": sk_live_abcdef123, "projectApiKey": "x" }]\n}\n')
    let error: unknown
    try {
      loadConfig(file, {})
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(ConfigError)
    const message = (error as ConfigError).message
    expect(message).toBe(`(file): ${file} is not valid JSON: an unexpected character at line 2, column 29`)
    expect(message).not.toContain('sk_live')
  })

  it.each([
    ['{"a":1,}', "a ',' before '}' (trailing commas are not JSON) at line 1, column 8"],
    ['{"a":1', 'an unexpected end at line 1, column 7'],
    ['{"a" 1}', "a missing ':' after a property name at line 1, column 6"],
    ["{'a':1}", 'a property name that is not a double-quoted string at line 1, column 2'],
    ['{"a":"x\\q"}', 'a bad escape in a string at line 1, column 8'],
    ['{} {}', 'more after the end of the JSON value at line 1, column 4'],
    ['[1 2]', "a missing ',' or ']' after a value at line 1, column 4"]
  ])('jsonSyntaxError(%s) → %s', (text, where) => {
    expect(() => JSON.parse(text)).toThrow()
    expect(jsonSyntaxError(text)).toBe(where)
  })

  it('a file that starts with a byte order mark is read', () => {
    const file = join(tempDir(), 'oneflow-relay.json')
    writeFileSync(file, `\ufeff${JSON.stringify({ sources: [SOURCE] })}`)
    expect(loadConfig(file, {}).sources[0]?.name).toBe('source-1')
  })
})

describe('listen from the environment', () => {
  it('takes "env:NAME" for listen.host and listen.port (PORT and HOST, as platforms set them)', () => {
    const raw = { listen: { host: 'env:HOST', port: 'env:PORT' }, sources: [SOURCE] }
    const config = parseConfig(raw, { env: { HOST: '0.0.0.0', PORT: '8080' } })
    expect(config.listen).toMatchObject({ host: '0.0.0.0', port: 8080 })
    // The raw object is left as written (a config may be parsed again with another environment).
    expect(raw.listen).toEqual({ host: 'env:HOST', port: 'env:PORT' })
  })

  it('names the variable that is not set, and checks the port it holds like any port', () => {
    expect(problemsOf({ listen: { port: 'env:PORT' }, sources: [SOURCE] })).toEqual([
      { key: 'listen.port', message: 'reads the environment variable PORT, which is not set' }
    ])
    expect(problemsOf({ listen: { port: 'env:PORT' }, sources: [SOURCE] }, { PORT: 'http' })).toEqual([
      { key: 'listen.port', message: 'reads PORT, whose value is not a port number (a whole number from 1 to 65535)' }
    ])
  })

  it('names the variable when its value is not a port; admin commands need no PORT at all', () => {
    expect(problemsOf({ listen: { port: 'env:PORT' }, sources: [SOURCE] }).length).toBe(1)
    expect(problemsOf({ listen: { port: 'env:PORT' }, sources: [SOURCE] }, { PORT: '8080abc' })).toEqual([
      { key: 'listen.port', message: 'reads PORT, whose value is not a port number (a whole number from 1 to 65535)' }
    ])
    expect(
      parseConfig({ listen: { port: 'env:PORT' }, sources: [SOURCE] }, { env: {}, queueOnly: true }).listen.port
    ).toBe(8787)
  })

  it('takes "env:NAME" for any other setting, as the type the setting has, and checks it as if written', () => {
    const raw = {
      listen: { ops: { port: 'env:OPS_PORT' } },
      oneflow: { apiBaseUrl: 'env:API', mode: 'env:MODE', concurrency: 'env:CONC' },
      limits: { diskCapBytes: 'env:CAP' },
      statusPage: { enabled: 'env:STATUS' },
      shutdownGraceMs: 'env:GRACE',
      sources: [SOURCE]
    }
    const env = {
      OPS_PORT: '9090',
      API: 'http://127.0.0.1:4000/',
      MODE: 'single',
      CONC: '4',
      CAP: '50000000',
      STATUS: 'false',
      GRACE: '1000'
    }
    const config = parseConfig(raw, { env })
    expect(config.listen.ops).toEqual({ host: '127.0.0.1', port: 9090 })
    expect(config.oneflow).toMatchObject({ apiBaseUrl: 'http://127.0.0.1:4000', mode: 'single', concurrency: 4 })
    expect(config.limits.diskCapBytes).toBe(50_000_000)
    expect(config.statusPage.enabled).toBe(false)
    expect(config.shutdownGraceMs).toBe(1000)
    const bad = problemsOf(raw, { ...env, CONC: 'four', STATUS: 'yes', MODE: 'fast', GRACE: '-1' })
    expect(bad).toEqual([
      { key: 'oneflow.concurrency', message: 'reads CONC, whose value is not a whole number' },
      { key: 'oneflow.mode', message: expect.stringContaining('must be "batch"') as string },
      { key: 'statusPage.enabled', message: 'reads STATUS, whose value must be true or false' },
      { key: 'shutdownGraceMs', message: 'reads GRACE, whose value is not a whole number' }
    ])
  })

  it('lets admin commands (queueOnly) read a config whose credentials are not in the environment', () => {
    const raw = { sources: [{ writeKey: 'env:WK', projectApiKey: 'env:PK' }] }
    expect(problemsOf(raw).map((p) => p.key)).toEqual(['sources[0].writeKey', 'sources[0].projectApiKey'])
    expect(parseConfig(raw, { env: {}, queueOnly: true }).sources).toHaveLength(1)
  })
})

describe('what a deployment gets wrong', () => {
  it('reads env:NAME for the Segment target of survey responses too', () => {
    const raw = {
      sources: [
        {
          ...SOURCE,
          webhookToken: 'a_webhook_token_of_24_chars_ok',
          segment: { writeKey: 'seg_write_key', host: 'env:SEG_HOST', eventName: 'env:SEG_EVENT' }
        }
      ]
    }
    const config = parseConfig(raw, { env: { SEG_HOST: 'https://events.eu1.segmentapis.com', SEG_EVENT: 'NPS' } })
    expect(config.sources[0]!.segment).toMatchObject({ host: 'https://events.eu1.segmentapis.com', eventName: 'NPS' })
  })

  it('refuses a PostgreSQL URL that does not parse (a password with / or # in it), saying how to write it', () => {
    expect(problemsOf({ queue: 'postgres://oneflow:s3cr/et#pw@127.0.0.1:5432/oneflow', sources: [SOURCE] })).toEqual([
      {
        key: 'queue',
        message:
          'is not a valid URL: a password with / # ? @ % or : must be percent-encoded (or left out of the URL and given in PGPASSWORD)'
      }
    ])
  })

  it('lets admin commands read a config whose ops port comes from an unset variable', () => {
    const raw = { listen: { ops: { port: 'env:OPS_PORT' } }, sources: [SOURCE] }
    expect(new Set(problemsOf(raw).map((p) => p.key))).toEqual(new Set(['listen.ops.port']))
    expect(parseConfig(raw, { env: {}, queueOnly: true }).queue).toMatch(/^sqlite:/)
  })
})
