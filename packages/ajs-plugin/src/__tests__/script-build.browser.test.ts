/**
 * The script-tag build (`dist/oneflow.global.js`, what unpkg and jsDelivr serve for the package) in real Chromium: loaded with a
 * plain `<script>`, its `OneFlowSegment.oneFlow` registered with real analytics-next, with the presets and with
 * custom mappings (bundled inside it), reaching a recording 1Flow SDK.
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { bundlePage, launchChromium, openPage, PageServer, sdkHasCalls } from '@oneflow-seg/testkit'

const here = dirname(fileURLToPath(import.meta.url))
const packageJson = JSON.parse(readFileSync(join(here, '..', '..', 'package.json'), 'utf8')) as {
  version: string
  unpkg?: string
  jsdelivr?: string
  files: string[]
}

let browser: Browser
let server: PageServer
beforeAll(async () => {
  const files = await bundlePage(join(here, 'script-page.ts'))
  // What the package ships, built: the test runs after the package's build (turbo's test depends on build).
  files.set('oneflow.global.js', readFileSync(join(here, '..', '..', 'dist', 'oneflow.global.js'), 'utf8'))
  server = await PageServer.start(files)
  browser = await launchChromium()
}, 60_000)
afterAll(async () => {
  await browser?.close()
  await server?.close()
})

it('is the file unpkg and jsDelivr serve for the package, and it ships', () => {
  expect([packageJson.unpkg, packageJson.jsdelivr]).toEqual(['./dist/oneflow.global.js', './dist/oneflow.global.js'])
  expect(packageJson.files).toContain('dist')
})

it.each([
  ['the presets', {}],
  [
    'custom mappings',
    {
      mappings: [
        { name: 'Sign-ups', subscribe: 'type = "track" and event = "Signed Up"', partnerAction: 'trackEvent' },
        { name: 'Users', subscribe: 'type = "identify"', partnerAction: 'identifyUser' }
      ]
    }
  ]
])('registered from a script tag with %s, it sends to 1Flow', async (_what, options) => {
  const p = await openPage(browser, server, {})
  try {
    const version = await p.page.evaluate(
      (o) =>
        (window as unknown as { harness: { start(o: object): Promise<string> } }).harness.start({
          projectApiKey: 'pk-script',
          ...o
        }),
      options
    )
    expect(version).toBe(packageJson.version)
    await p.page.waitForFunction(sdkHasCalls, 2, { timeout: 15_000 })
    const calls = await p.page.evaluate(
      () => (window as unknown as { __oneflowRecorder: { calls: unknown[] } }).__oneflowRecorder.calls
    )
    expect(calls).toEqual([
      ['logUser', 'user-1', { plan: 'pro' }],
      ['logEvent', 'Signed Up', { plan: 'pro' }]
    ])
  } finally {
    await p.close()
  }
})
