/**
 * `pnpm start` as a new user meets it: the sandbox starts, its demo page sends identify/track/page, and the
 * page shows what 1Flow received — through its web SDK in the browser and through the relay's HTTP API —
 * and what Segment received when 1Flow posts a survey response to the relay's webhook.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { launchChromium } from '@oneflow-seg/testkit'
import type { Browser } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))
const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })

let demo: ChildProcess
let output = ''
let browser: Browser
let demoUrl: string
beforeAll(async () => {
  const [relay, fake, page, segment] = await Promise.all([freePort(), freePort(), freePort(), freePort()])
  demo = spawn(process.execPath, [join(here, '..', 'run.mjs')], {
    cwd: join(here, '..', '..', '..'),
    env: {
      ...process.env,
      ONEFLOW_DEMO_SKIP_BUILD: '1',
      PORT: String(relay),
      SANDBOX_1FLOW_PORT: String(fake),
      DEMO_PORT: String(page),
      SANDBOX_SEGMENT_PORT: String(segment),
      ONEFLOW_PROJECT_API_KEY: ''
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  demo.stdout!.on('data', (d: Buffer) => (output += d))
  demo.stderr!.on('data', (d: Buffer) => (output += d))
  const deadline = Date.now() + 60_000
  while (!/Open the demo: (\S+)/.test(output)) {
    if (Date.now() > deadline || demo.exitCode !== null) throw new Error(`the demo did not start:\n${output}`)
    await new Promise((r) => setTimeout(r, 100))
  }
  demoUrl = /Open the demo: (\S+)/.exec(output)![1]!
  browser = await launchChromium()
}, 90_000)
afterAll(async () => {
  await browser?.close()
  demo?.kill('SIGTERM')
})

it('prints a clearly labelled sandbox banner with the curl lines', () => {
  expect(output).toContain('SANDBOX: no 1Flow key configured')
  expect(output).toMatch(/curl -s -u sandbox-write-key: .*\n.*\/v1\/track/)
  expect(output).toMatch(/curl -s http:\/\/127\.0\.0\.1:\d+\/__fake\/accepted/)
})

it('shows each 1Flow call as it happens, in the browser and through the relay, and survey responses reaching Segment', async () => {
  const context = await browser.newContext()
  await context.route('**/*', (route) =>
    new URL(route.request().url()).hostname === '127.0.0.1' ? route.continue() : route.abort()
  )
  const page = await context.newPage()
  await page.goto(demoUrl)
  await page.waitForFunction(() => document.getElementById('ready')?.textContent === 'ready', undefined, {
    timeout: 20_000
  })
  await page.click('#identify')
  await page.click('#track')
  await page.click('#page')
  await page.waitForFunction(
    () => (document.getElementById('sdk')?.textContent ?? '').includes('logEvent'),
    undefined,
    { timeout: 15_000 }
  )
  await page.waitForFunction(() => (document.getElementById('http')?.textContent ?? '').includes('track'), undefined, {
    timeout: 15_000
  })
  const sdk = await page.textContent('#sdk')
  expect(sdk).toContain('["logUser","user-1",{"name":"Ada Lovelace","plan":"pro"}]')
  expect(sdk).toContain('["logEvent","Signed Up",{"plan":"pro","clicks":1}]')
  const http = await page.textContent('#http')
  expect(http).toContain('/batch identify {"user_id":"user-1"')
  expect(http).toContain('/batch track {"event":"Signed Up","user_id":"user-1"')
  // The page event's answer from the relay is logged when it comes, which on a loaded machine can be after the
  // track's delivery above: wait for it rather than read the log once.
  await page.waitForFunction(
    () => (document.getElementById('log')?.textContent ?? '').includes('relay answered 200 to page'),
    undefined,
    { timeout: 15_000 }
  )
  const log = await page.textContent('#log')
  expect(log).toContain('relay answered 200 to page')
  // Page is not sent (Track Page View is opt-in), and the page says so, and how to turn it on.
  expect(log).toContain('1Flow gets nothing for this page, in the browser or through the relay (not-subscribed)')
  expect(log).toContain('"partnerAction": "trackPage"')
  // And back: a survey response through the relay's webhook, as Segment's stand-in received it.
  await page.click('#survey')
  await page.waitForFunction(
    () => (document.getElementById('segment')?.textContent ?? '').includes('Survey Response Submitted'),
    undefined,
    { timeout: 15_000 }
  )
  expect(await page.textContent('#segment')).toContain(
    'track "Survey Response Submitted" userId=user-1 survey=Onboarding NPS answers=[{"question":"How likely are you to recommend us to a friend?","answer":9,"type":"nps"}'
  )
  // Logged when the page gets the relay's answer: waited for, like the page event's above.
  await page.waitForFunction(
    () =>
      (document.getElementById('log')?.textContent ?? '').includes(
        "relay answered 200 to 1Flow's survey-response webhook"
      ),
    undefined,
    { timeout: 15_000 }
  )
  expect(await page.textContent('#log')).toContain("relay answered 200 to 1Flow's survey-response webhook")
  await context.close()
}, 60_000)
