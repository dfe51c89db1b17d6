import type { GlobalSetting, InputField } from '@segment/actions-core'
import { describe, expect, expectTypeOf, it } from 'vitest'
import {
  DEFAULT_API_BASE_URL,
  DEFAULT_SDK_URL,
  identifyUserFields,
  InvalidSettingsError,
  presets,
  PreReadyBuffer,
  resolveSdkSettings,
  resolveSettings,
  cloudSettings,
  deviceSettings,
  trackEventFields,
  type CloudSettings,
  type DeviceSettings,
  type IdentifyUserPayload,
  type TrackEventPayload,
  type TrackPagePayload
} from '../index'

describe('settings', () => {
  it('applies the defaults, each mode reading only its own settings', () => {
    expect(resolveSettings({ projectApiKey: ' key-1 ' })).toEqual({
      projectApiKey: 'key-1',
      apiBaseUrl: DEFAULT_API_BASE_URL,
      consentCategories: []
    })
    expect(DEFAULT_SDK_URL).toBe('https://1flow.app/js/1flow.js')
    expect(DEFAULT_API_BASE_URL).toBe('https://api.1flow.app/v1')
  })

  it('validates the SDK settings: load deadline and buffer within the ranges the fields declare, defaults 10 s and 100', () => {
    expect(resolveSdkSettings({ projectApiKey: 'k' })).toEqual({
      projectApiKey: 'k',
      sdkUrl: DEFAULT_SDK_URL,
      loadTimeoutMs: 10_000,
      bufferLimit: 100,
      consentCategories: []
    })
    expect(resolveSdkSettings({ projectApiKey: 'k', loadTimeoutMs: 30_000, bufferLimit: 5 })).toMatchObject({
      loadTimeoutMs: 30_000,
      bufferLimit: 5
    })
    // The ranges are the fields' own minimum/maximum (what Segment's app shows), written once.
    expect(deviceSettings.loadTimeoutMs).toMatchObject({ minimum: 1_000, maximum: 60_000 })
    expect(deviceSettings.bufferLimit).toMatchObject({ minimum: 1, maximum: 10_000 })
    for (const key of ['loadTimeoutMs', 'bufferLimit'] as const) {
      const { minimum, maximum } = deviceSettings[key]
      for (const ok of [minimum, maximum]) expect(resolveSdkSettings({ projectApiKey: 'k', [key]: ok })).toBeTruthy()
      for (const bad of [minimum - 1, maximum + 1, minimum + 0.5, String(minimum)]) {
        expect(() => resolveSdkSettings({ projectApiKey: 'k', [key]: bad })).toThrowError(
          expect.objectContaining({
            name: 'InvalidSettingsError',
            key,
            message: `Setting "${key}" must be a whole number from ${minimum} to ${maximum} (default ${key === 'loadTimeoutMs' ? 10000 : 100}).`
          })
        )
      }
    }
  })

  it("a bad value of one mode's setting never breaks the other mode", () => {
    // Device-only settings are not read by cloud mode, and cloud-only ones not by device mode.
    expect(resolveSettings({ projectApiKey: 'k', loadTimeoutMs: 5, sdkUrl: 'not a url', bufferLimit: 0 })).toEqual({
      projectApiKey: 'k',
      apiBaseUrl: DEFAULT_API_BASE_URL,
      consentCategories: []
    })
    expect(resolveSdkSettings({ projectApiKey: 'k', apiBaseUrl: 'not a url' }).sdkUrl).toBe(DEFAULT_SDK_URL)
    // Each mode's field list has its own settings only.
    expect(Object.keys(deviceSettings)).toEqual([
      'projectApiKey',
      'sdkUrl',
      'loadTimeoutMs',
      'bufferLimit',
      'consentCategories'
    ])
    expect(Object.keys(cloudSettings)).toEqual(['projectApiKey', 'apiBaseUrl', 'consentCategories'])
  })

  it("takes an SDK URL that is a path on the page's own origin, not a protocol-relative or script URL", () => {
    expect(resolveSdkSettings({ projectApiKey: 'k', sdkUrl: '/1flow.js' }).sdkUrl).toBe('/1flow.js')
    expect(resolveSdkSettings({ projectApiKey: 'k', sdkUrl: '/vendor/1flow.js?v=2' }).sdkUrl).toBe(
      '/vendor/1flow.js?v=2'
    )
    for (const bad of ['//cdn.example.com/1flow.js', 'javascript:alert(1)', '1flow.js', 'ftp://x/1flow.js'])
      expect(() => resolveSdkSettings({ projectApiKey: 'k', sdkUrl: bad })).toThrowError(
        expect.objectContaining({ key: 'sdkUrl' })
      )
  })

  it('keeps overrides and trims a trailing slash from the API base URL', () => {
    expect(resolveSettings({ projectApiKey: 'k', apiBaseUrl: 'http://127.0.0.1:9/v1/' })).toMatchObject({
      apiBaseUrl: 'http://127.0.0.1:9/v1'
    })
    expect(resolveSdkSettings({ projectApiKey: 'k', sdkUrl: 'http://127.0.0.1:9/sdk.js' }).sdkUrl).toBe(
      'http://127.0.0.1:9/sdk.js'
    )
  })

  it('reads consent categories as a list of ids, in both modes', () => {
    expect(
      resolveSettings({ projectApiKey: 'k', consentCategories: ['Analytics', ' C0004 '] }).consentCategories
    ).toEqual(['Analytics', 'C0004'])
    expect(resolveSdkSettings({ projectApiKey: 'k', consentCategories: ['Analytics'] }).consentCategories).toEqual([
      'Analytics'
    ])
    for (const bad of [[''], [1], { Analytics: true }, 'Analytics'])
      expect(() => resolveSdkSettings({ projectApiKey: 'k', consentCategories: bad })).toThrowError(
        expect.objectContaining({ key: 'consentCategories' })
      )
  })

  it.each([
    [{}, 'projectApiKey'],
    [{ projectApiKey: '' }, 'projectApiKey'],
    [{ projectApiKey: 42 }, 'projectApiKey'],
    [{ projectApiKey: 'k', apiBaseUrl: 'api.1flow.app' }, 'apiBaseUrl'],
    [{ projectApiKey: 'k', apiBaseUrl: '/v1' }, 'apiBaseUrl'],
    [null, 'settings']
  ])('refuses %j naming %s', (input, key) => {
    expect(() => resolveSettings(input)).toThrowError(InvalidSettingsError)
    expect(() => resolveSettings(input)).toThrowError(
      expect.objectContaining({ key, code: 'INVALID_SETTINGS', remedy: 'fix-config' })
    )
  })

  it('never puts a secret in an error message', () => {
    try {
      resolveSettings({ projectApiKey: 'secret-key-value', apiBaseUrl: 'not a url secret-key-value' })
    } catch (error) {
      expect((error as Error).message).not.toContain('secret-key-value')
      return
    }
    expect.unreachable('resolveSettings should have thrown')
  })

  it('marks the project API key as a required secret, in both modes', () => {
    expect(deviceSettings.projectApiKey).toMatchObject({ type: 'password', required: true })
    expect(cloudSettings.projectApiKey).toBe(deviceSettings.projectApiKey)
  })
})

describe('presets and fields (as Segment documents the destination)', () => {
  it('has exactly the documented presets with field defaults as mappings', () => {
    expect(presets).toEqual([
      {
        name: 'Track Event',
        subscribe: 'type = "track"',
        partnerAction: 'trackEvent',
        type: 'automatic',
        mapping: {
          event_name: { '@path': '$.event' },
          userId: { '@path': '$.userId' },
          anonymousId: { '@path': '$.anonymousId' },
          properties: { '@path': '$.properties' }
        }
      },
      {
        name: 'Identify User',
        subscribe: 'type = "identify"',
        partnerAction: 'identifyUser',
        type: 'automatic',
        mapping: { userId: { '@path': '$.userId' }, traits: { '@path': '$.traits' } }
      }
    ])
  })

  it('labels the fields as Segment documents them', () => {
    expect(Object.fromEntries(Object.entries(identifyUserFields).map(([k, f]) => [k, [f.label, f.type]]))).toEqual({
      userId: ['User ID', 'string'],
      traits: ['Custom Attributes', 'object']
    })
    expect(
      Object.fromEntries(
        Object.entries(trackEventFields).map(([k, f]) => [k, [f.label, f.type, (f as InputField).required ?? false]])
      )
    ).toEqual({
      event_name: ['Event Name', 'string', true],
      userId: ['User ID', 'string', false],
      anonymousId: ['Anonymous ID', 'string', false],
      properties: ['Event Properties', 'object', false]
    })
  })

  it('infers payload types from the field objects', () => {
    expectTypeOf<TrackEventPayload>().toEqualTypeOf<{
      event_name: string
      userId?: string
      anonymousId?: string
      properties?: Record<string, unknown>
    }>()
    expectTypeOf<IdentifyUserPayload>().toEqualTypeOf<{ userId?: string; traits?: Record<string, unknown> }>()
    expectTypeOf<TrackPagePayload>().toEqualTypeOf<TrackEventPayload>()
    expectTypeOf<DeviceSettings>().toEqualTypeOf<{
      projectApiKey: string
      sdkUrl?: string
      loadTimeoutMs?: number
      bufferLimit?: number
      consentCategories?: string[]
    }>()
    expectTypeOf<CloudSettings>().toEqualTypeOf<{
      projectApiKey: string
      apiBaseUrl?: string
      consentCategories?: string[]
    }>()
    expectTypeOf(trackEventFields).toMatchTypeOf<Record<string, InputField>>()
    expectTypeOf(deviceSettings).toMatchTypeOf<Record<string, GlobalSetting>>()
    expectTypeOf(cloudSettings).toMatchTypeOf<Record<string, GlobalSetting>>()
  })
})

describe('field types', () => {
  it('uses only the field types validatePayload knows (string family and object)', async () => {
    const { actions } = await import('../index')
    const types = Object.values(actions).flatMap((a) =>
      Object.values(a.fields as Record<string, InputField>).map((f) => f.type)
    )
    expect(new Set(types)).toEqual(new Set(['string', 'object']))
  })
})

describe('the pre-ready buffer', () => {
  it('keeps at most its limit, hands items over in dispatch order, and reports drops with the reason', () => {
    const drops: Array<[string, string]> = []
    const buffer = new PreReadyBuffer<string>(3, (item, reason) => drops.push([item, reason]))
    expect([buffer.push('c', 2), buffer.push('a', 0), buffer.push('b', 1), buffer.push('d', 3)]).toEqual([
      true,
      true,
      true,
      false
    ])
    expect(drops).toEqual([['d', 'buffer-full']])
    const delivered: string[] = []
    const errors: string[] = []
    buffer.flush(
      (item) => {
        if (item === 'b') throw new Error('sdk threw')
        delivered.push(item)
      },
      (item, error) => errors.push(`${item}: ${(error as Error).message}`)
    )
    expect(delivered).toEqual(['a', 'c'])
    expect(errors).toEqual(['b: sdk threw'])
    expect(buffer.size).toBe(0)
  })

  it('keeps arrival order for equal ranks, and drops everything it holds when the SDK fails', () => {
    const drops: Array<[string, string]> = []
    const buffer = new PreReadyBuffer<string>(10, (item, reason) => drops.push([item, reason]))
    buffer.push('x')
    buffer.push('y')
    buffer.push('z', 0)
    const order: string[] = []
    buffer.flush(
      (item) => order.push(item),
      () => undefined
    )
    expect(order).toEqual(['x', 'z', 'y'])
    buffer.push('p')
    buffer.push('q')
    expect(buffer.dropAll('sdk-failed')).toBe(2)
    expect(drops).toEqual([
      ['p', 'sdk-failed'],
      ['q', 'sdk-failed']
    ])
  })
})
