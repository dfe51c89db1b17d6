/** The live status page in real headless Chromium: its numbers change as events flow; its preview sends nothing. */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeOneFlowApi, FakeSegmentApi, launchChromium, surveyWebhookPayload } from '@oneflow-seg/testkit'
import type { Browser } from 'playwright-core'
import { parsePreviewInput, previewEvents } from '../preview'
import { post, PROJECT_KEY, startRelay, WRITE_KEY, type TestRelay } from './helpers'

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
  // The queue's figures are read at most once a second (shared by /health, /metrics and the page): the depth may
  // show the read from before the delivery for one refresh more.
  await page.waitForFunction(() => document.getElementById('depth')?.textContent === '0', undefined, {
    timeout: 15_000
  })
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
    // Delivered counts and the queue's figures are read at different moments: wait for both to show the end state.
    for (const lane of ['web', 'segment:web'])
      await page.waitForFunction(
        (l) => {
          const cells = document.querySelectorAll(`#lanes tr[data-lane="${l}"] td`)
          return cells[2]?.textContent === '0' && cells[3]?.textContent === (l === 'web' ? '4' : '1')
        },
        lane,
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

describe('the preview: what 1Flow would receive for pasted events, sending and storing nothing', () => {
  const TOKEN = 'whk_preview_secret_0123456789abcdef'
  const SEGMENT_KEY = 'seg_wk_preview_secret'
  const SIGNUPS_KEYS = { writeKey: 'wk_signups_secret_0123', projectApiKey: 'pk_signups_secret_0123' }
  const SECRETS = [WRITE_KEY, PROJECT_KEY, TOKEN, SEGMENT_KEY, SIGNUPS_KEYS.writeKey, SIGNUPS_KEYS.projectApiKey]
  let oneflow: FakeOneFlowApi
  let segment: FakeSegmentApi
  let both: TestRelay
  beforeAll(async () => {
    oneflow = await FakeOneFlowApi.start()
    segment = await FakeSegmentApi.start({ writeKeys: [SEGMENT_KEY] })
    both = await startRelay(oneflow, {
      statusPage: { enabled: true },
      sources: [
        {
          name: 'web',
          writeKey: WRITE_KEY,
          projectApiKey: PROJECT_KEY,
          webhookToken: TOKEN,
          segment: { writeKey: SEGMENT_KEY, host: segment.url }
        },
        {
          name: 'signups',
          ...SIGNUPS_KEYS,
          mappings: [
            { name: 'Sign-ups', subscribe: 'type = "track" and event = "Signed Up"', partnerAction: 'trackEvent' }
          ]
        }
      ]
    })
  }, 30_000)
  afterAll(async () => {
    await both?.stop()
    await segment?.close()
    await oneflow?.close()
  })

  const sourceNamed = (name: string) => both.relay.config.sources.find((s) => s.name === name)!
  /** What the CLI prints for `text` from `source`, one parsed line per event. */
  const cliLines = (text: string, source: string) =>
    previewEvents(parsePreviewInput(text), sourceNamed(source)).map((r) => JSON.parse(JSON.stringify(r)) as unknown)
  async function preview(
    body: string,
    { query = '?source=web', headers = { 'x-oneflow-preview': '1' } as Record<string, string>, url = both.url } = {}
  ) {
    const res = await fetch(`${url}/status/preview${query}`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', ...headers },
      body
    })
    const text = await res.text()
    return { status: res.status, text, body: JSON.parse(text) as Record<string, unknown> }
  }
  const ndjson = (...events: unknown[]) => events.map((e) => JSON.stringify(e)).join('\n')

  it('answers per event what the CLI prints: the body 1Flow would get and the SDK call, or why not', async () => {
    const text = ndjson(
      { type: 'track', event: 'Clicked', userId: 'u1', properties: { plan: 'pro' } },
      { type: 'page', name: 'Pricing', userId: 'u1' },
      { type: 'track', event: 'No One' }
    )
    const web = await preview(text)
    expect(web.status).toBe(200)
    expect(web.body).toMatchObject({ source: 'web', events: 3, sent: 1 })
    const results = web.body.results as Array<Record<string, unknown>>
    expect(results[0]).toMatchObject({
      index: 0,
      sent: [
        {
          http: {
            method: 'POST',
            path: '/track',
            body: { event: 'Clicked', user_id: 'u1', properties: { plan: 'pro' } }
          },
          sdk: ['logEvent', 'Clicked', { plan: 'pro' }]
        }
      ]
    })
    expect(results[1]).toMatchObject({ index: 1, sent: [], skipped: [{ reason: 'not-subscribed' }] })
    expect(results[2]).toMatchObject({ index: 2, sent: [], rejected: { code: 'missing_identity' } })
    expect(results).toEqual(cliLines(text, 'web'))

    // The named source's own mappings; a {"batch": […]} body reads as the CLI reads it.
    const batch = JSON.stringify({
      batch: [
        { type: 'track', event: 'Clicked', userId: 'u1' },
        { type: 'track', event: 'Signed Up', userId: 'u1' }
      ]
    })
    const signups = await preview(batch, { query: '?source=signups' })
    expect(signups.status).toBe(200)
    expect(signups.body).toMatchObject({ source: 'signups', events: 2, sent: 1 })
    expect(signups.body.results).toMatchObject([
      { sent: [], skipped: [{ reason: 'not-subscribed' }] },
      { sent: [{ subscription: 'Sign-ups', http: { path: '/track', body: { event: 'Signed Up' } } }] }
    ])
    expect(signups.body.results).toEqual(cliLines(batch, 'signups'))
  })

  it('sends nothing, stores nothing, and shows no credential', async () => {
    const before = await both.relay.queue.stats(Date.now())
    const answers = [
      await preview(ndjson({ type: 'track', event: 'A', userId: 'u1', messageId: 'preview-1' })),
      await preview(ndjson({ type: 'identify', userId: 'u1', traits: { plan: 'pro' } })),
      await preview(ndjson({ type: 'track', event: 'Signed Up', userId: 'u1' }), { query: '?source=signups' }),
      await preview('{"type": "track",', { query: '?source=signups' }),
      await preview('{}', { query: '?source=nope' })
    ]
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 400, 400])
    expect((answers[0]!.body.results as Array<{ sent: unknown[] }>)[0]!.sent).toHaveLength(1)
    for (const { text } of answers) {
      for (const secret of SECRETS) expect(text).not.toContain(secret)
      expect(text).not.toMatch(/api_key|authorization|writeKey|webhookToken/i)
    }
    // Give delivery time to send anything that was queued.
    await new Promise((r) => setTimeout(r, 500))
    expect(await both.relay.queue.stats(Date.now())).toEqual(before)
    const data = (await (await fetch(`${both.url}/status/data`)).json()) as { totals: { received: number } }
    expect(data.totals.received).toBe(0)
    expect(oneflow.requests).toEqual([])
    expect(segment.requests).toEqual([])
  })

  it('refuses a page elsewhere: without its header it is 403, and no preflight is granted', async () => {
    const event = ndjson({ type: 'track', event: 'A', userId: 'u1' })
    expect((await preview(event)).status).toBe(200)
    for (const headers of [{}, { 'x-oneflow-preview': '0' }] as Array<Record<string, string>>) {
      const refused = await preview(event, { headers })
      expect(refused.status).toBe(403)
      expect(refused.body.error).toContain('x-oneflow-preview: 1')
      expect(refused.body).not.toHaveProperty('results')
    }
    const preflight = await fetch(`${both.url}/status/preview?source=web`, {
      method: 'OPTIONS',
      headers: {
        origin: 'http://elsewhere.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'x-oneflow-preview'
      }
    })
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull()
    expect(preflight.headers.get('access-control-allow-headers')).toBeNull()
  })

  it('says what it cannot take: an unknown source, JSON that breaks (where, as the CLI says), too much, too many', async () => {
    const event = { type: 'track', event: 'A', userId: 'u1' }
    const unknown = await preview(ndjson(event), { query: '?source=nope' })
    expect([unknown.status, unknown.body.code, unknown.body.sources]).toEqual([
      400,
      'unknown_source',
      ['web', 'signups']
    ])
    expect(unknown.body.error).toBe('no source named "nope"; the sources are: web, signups')

    const broken = `${JSON.stringify(event)}\n{"type": "track",, "userId": "u2"}\n`
    const malformed = await preview(broken)
    expect(malformed.status).toBe(400)
    expect(malformed.body).toMatchObject({ code: 'invalid_json', line: 2, column: 18 })
    expect(() => parsePreviewInput(broken)).toThrow(malformed.body.error as string)
    expect(malformed.body.error).toContain('at line 2, column 18')
    const pretty = await preview('{\n  "type": "track"\n  "userId": "u1"\n}')
    expect(pretty.body).toMatchObject({ code: 'invalid_json', line: 3, column: 3 })
    expect((await preview('  \n')).body).toMatchObject({
      code: 'invalid_input',
      error: expect.stringContaining('empty')
    })

    // 64 KB: declared up front, or only found out while reading a chunked body.
    const big = ndjson({ ...event, properties: { text: 'x'.repeat(70 * 1024) } })
    const tooBig = await preview(big)
    expect([tooBig.status, tooBig.body.code]).toEqual([413, 'request_too_large'])
    expect(tooBig.body.error).toBe('the preview takes at most 64 KB of events; paste fewer')
    const chunked = await fetch(`${both.url}/status/preview?source=web`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'x-oneflow-preview': '1' },
      body: new Blob([big]).stream(),
      duplex: 'half'
    } as RequestInit)
    expect([chunked.status, ((await chunked.json()) as { code: string }).code]).toEqual([413, 'request_too_large'])
    const justUnder = await preview(ndjson({ ...event, properties: { text: 'x'.repeat(60 * 1024) } }))
    expect(justUnder.status).toBe(200)

    const many = (n: number) => ndjson(...Array.from({ length: n }, (_, i) => ({ ...event, userId: `u${i}` })))
    const tooMany = await preview(many(101))
    expect([tooMany.status, tooMany.body.code, tooMany.body.error]).toEqual([
      400,
      'too_many_events',
      '101 events: the preview takes at most 100 at once'
    ])
    expect((await preview(many(100))).body).toMatchObject({ events: 100, sent: 100 })
  })

  it('is there only with the status page enabled', async () => {
    const event = ndjson({ type: 'track', event: 'A', userId: 'u1' })
    expect((await preview(event)).status).toBe(200)
    const plain = await startRelay(oneflow)
    try {
      const res = await fetch(`${plain.url}/status/preview?source=web`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain', 'x-oneflow-preview': '1' },
        body: event
      })
      expect(res.status).toBe(404)
    } finally {
      await plain.stop()
    }
  })

  it('in the page: paste events, pick the source, press Preview, read the results; a page elsewhere cannot', async () => {
    const context = await browser.newContext()
    let elsewhere: Server | undefined
    try {
      await context.route('**/*', (route) =>
        new URL(route.request().url()).hostname === '127.0.0.1' ? route.continue() : route.abort()
      )
      const page = await context.newPage()
      await page.goto(`${both.url}/status`)
      await page.waitForFunction(() => document.querySelectorAll('#previewSource option').length === 2)
      expect(await page.locator('#previewSource option').allTextContents()).toEqual(['web', 'signups'])

      const text = ndjson(
        { type: 'track', event: 'Signed Up', userId: 'u1', properties: { plan: 'pro' } },
        { type: 'identify', userId: 'u1', traits: { plan: 'pro' } }
      )
      await page.fill('#previewInput', text)
      await page.click('#previewButton')
      await page.waitForFunction(() => document.querySelectorAll('#previewResults pre').length === 2)
      expect(await page.textContent('#previewSummary')).toBe('2 event(s) for source web: 2 sent, 0 not sent.')
      const shown = async () => (await page.locator('#previewResults pre').allTextContents()).map((t) => JSON.parse(t))
      expect(await shown()).toEqual(cliLines(text, 'web'))
      expect(await page.textContent('#previewResults')).toContain('"path": "/track"')

      await page.selectOption('#previewSource', 'signups')
      await page.click('#previewButton')
      await page.waitForFunction(() => document.getElementById('previewSummary')?.textContent?.includes('signups'))
      expect(await page.textContent('#previewSummary')).toBe('2 event(s) for source signups: 1 sent, 1 not sent.')
      expect(await shown()).toEqual(cliLines(text, 'signups'))
      expect(await page.textContent('#previewResults')).toContain('not-subscribed')
      // A refresh of the figures keeps the operator's choice.
      await page.waitForTimeout(1_500)
      expect(await page.inputValue('#previewSource')).toBe('signups')

      await page.fill('#previewInput', '{"type": "track" "event": "A"}')
      await page.click('#previewButton')
      await page.waitForFunction(() => document.getElementById('previewSummary')?.className === 'problem')
      expect(await page.textContent('#previewSummary')).toContain('at line 1, column 18')
      expect(await page.locator('#previewResults pre').count()).toBe(0)

      // Another origin (another port) with no request interception, so Chromium sends its own preflight.
      elsewhere = createServer((_req, res) =>
        res.setHeader('content-type', 'text/html').end('<!doctype html><p>elsewhere')
      )
      await new Promise<void>((r) => elsewhere!.listen(0, '127.0.0.1', r))
      const other = await browser.newContext()
      try {
        const page2 = await other.newPage()
        await page2.goto(`http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}/`)
        const outcome = await page2.evaluate(async (url) => {
          try {
            const res = await fetch(url, { method: 'POST', headers: { 'x-oneflow-preview': '1' }, body: '{}' })
            return `read ${res.status}`
          } catch (e) {
            return `refused: ${(e as Error).name}`
          }
        }, `${both.url}/status/preview?source=web`)
        expect(outcome).toBe('refused: TypeError')
      } finally {
        await other.close()
      }
    } finally {
      await context.close()
      elsewhere?.close()
    }
  }, 40_000)
})
