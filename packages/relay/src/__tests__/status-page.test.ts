/** The live status page in real headless Chromium: its numbers change as events flow. */
import { afterAll, beforeAll, expect, it } from 'vitest'
import { FakeOneFlowApi, FakeSegmentApi, launchChromium, surveyWebhookPayload } from '@oneflow-seg/testkit'
import type { Browser } from 'playwright-core'
import { post, startRelay, WRITE_KEY, type TestRelay } from './helpers'

let fake: FakeOneFlowApi
let relay: TestRelay
let browser: Browser
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
  relay = await startRelay(fake, { statusPage: { enabled: true } })
  browser = await launchChromium()
}, 60_000)
afterAll(async () => {
  await browser?.close()
  await relay?.stop()
  await fake?.close()
})

it('is off unless enabled', async () => {
  const plain = await startRelay(fake)
  try {
    expect((await fetch(`${plain.url}/status`)).status).toBe(404)
  } finally {
    await plain.stop()
  }
})

it('shows delivered, retried, rate, errors and a chart, updating without a reload', async () => {
  const context = await browser.newContext()
  await context.route('**/*', (route) =>
    new URL(route.request().url()).hostname === '127.0.0.1' ? route.continue() : route.abort()
  )
  const page = await context.newPage()
  let loads = 0
  page.on('load', () => loads++)
  await page.goto(`${relay.url}/status`)
  await page.waitForFunction(() => document.getElementById('delivered')?.textContent === '0')
  const number = async (id: string) => Number(await page.textContent(`#${id}`))

  fake.inject({ kind: 'status', status: 500, path: '/batch' })
  await post(relay.url, '/v1/batch', {
    batch: Array.from({ length: 30 }, (_, i) => ({ type: 'track', event: `E${i}`, userId: `u${i}` }))
  })
  await page.waitForFunction(() => document.getElementById('delivered')?.textContent === '30', undefined, {
    timeout: 15_000
  })
  expect(await number('retried')).toBe(30)
  expect(await number('depth')).toBe(0)
  expect(await page.textContent('#limit')).toBe('400')
  expect(await page.textContent('#errors')).toContain('1Flow answered 500')
  // The chart drew the requests of the last minutes: some point above the baseline.
  const points = (await page.getAttribute('#reqLine', 'points'))!.split(' ').map((p) => Number(p.split(',')[1]))
  expect(points).toHaveLength(300)
  expect(Math.min(...points)).toBeLessThan(100)
  expect(loads).toBe(1)
  await context.close()
}, 30_000)

it('shows both directions side by side: the 1Flow project and the Segment lane of survey responses', async () => {
  const segment = await FakeSegmentApi.start({ writeKeys: ['seg_wk_status_page'] })
  const token = 'whk_status_page_0123456789abcdef'
  const both = await startRelay(fake, {
    statusPage: { enabled: true },
    sources: [
      {
        name: 'web',
        writeKey: WRITE_KEY,
        projectApiKey: 'test-project-key',
        webhookToken: token,
        segment: { writeKey: 'seg_wk_status_page', host: segment.url }
      }
    ]
  })
  const context = await browser.newContext()
  try {
    await context.route('**/*', (route) =>
      new URL(route.request().url()).hostname === '127.0.0.1' ? route.continue() : route.abort()
    )
    const page = await context.newPage()
    await page.goto(`${both.url}/status`)
    fake.reset()
    await post(both.url, '/v1/batch', {
      batch: Array.from({ length: 4 }, (_, i) => ({ type: 'track', event: `E${i}`, userId: `u${i}` }))
    })
    await post(both.url, `/webhooks/1flow/web/${token}`, surveyWebhookPayload(), null)
    const row = (lane: string) => page.locator(`#lanes tr[data-lane="${lane}"] td`).allTextContents()
    await page.waitForFunction(
      () => document.querySelector('#lanes tr[data-lane="segment:web"] td:nth-child(4)')?.textContent === '1',
      undefined,
      { timeout: 15_000 }
    )
    await page.waitForFunction(
      () => document.querySelector('#lanes tr[data-lane="web"] td:nth-child(4)')?.textContent === '4',
      undefined,
      { timeout: 15_000 }
    )
    expect(await row('web')).toEqual(['web', '1Flow', '0', '4', expect.any(String), '400', 'sending'])
    expect(await row('segment:web')).toEqual(['segment:web', 'Segment', '0', '1', expect.any(String), '50', 'sending'])
  } finally {
    await context.close()
    await both.stop()
    await segment.close()
  }
}, 40_000)
