/**
 * 1Flow → Segment: survey-response webhooks through the relay to a stand-in for Segment's HTTP Tracking API,
 * as a user sets it up — the token in the URL, the Segment write key in the config.
 */
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest'
import {
  FakeOneFlowApi,
  FakeSegmentApi,
  manyScreens,
  NPS_SURVEY_SCREENS,
  surveyWebhookPayload
} from '@oneflow-seg/testkit'
import { createDatabase } from '@oneflow-seg/testkit/postgres'
import { parseConfig, type ConfigError } from '../config'
import { PROJECT_KEY, WRITE_KEY, post, startRelay, until, type TestRelay } from './helpers'
import { runCli, writeConfig } from './process'

const TOKEN = 'whk_3c1d9a7e5f2b4c6d8e0f1a2b'
const SEGMENT_KEY = 'seg_wk_survey_answers_123'

let oneflow: FakeOneFlowApi
let segment: FakeSegmentApi
let relay: TestRelay | undefined
beforeEach(async () => {
  oneflow = await FakeOneFlowApi.start()
  segment = await FakeSegmentApi.start({ writeKeys: [SEGMENT_KEY] })
})
afterEach(async () => {
  await relay?.stop()
  relay = undefined
  await Promise.all([oneflow.close(), segment.close()])
})

const source = (extra: Record<string, unknown> = {}) => ({
  name: 'web',
  writeKey: WRITE_KEY,
  projectApiKey: PROJECT_KEY,
  webhookToken: TOKEN,
  segment: { writeKey: SEGMENT_KEY, host: segment.url },
  ...extra
})
const start = (raw: Record<string, unknown> = {}) => startRelay(oneflow, { sources: [source()], ...raw })

/** POSTs like 1Flow: JSON, no auth header, the token in the URL. */
const webhook = (path: string, body: unknown) => post(relay!.url, path, body, null)
const stats = () => relay!.relay.queue.stats(Date.now())
const segmentEvents = () => segment.accepted.map((a) => a.event)

describe('survey responses reach Segment', () => {
  it('converts the documented webhook to a Survey Response Submitted track and sends it with the Segment write key', async () => {
    relay = await start()
    const res = await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload())
    expect([res.status, res.body]).toEqual([200, { success: true }])
    await segment.waitFor((a) => a.length === 1)
    const [accepted] = segment.accepted
    expect(accepted!.writeKey).toBe(SEGMENT_KEY)
    const { properties, ...event } = accepted!.event as { properties: Record<string, unknown> }
    expect(event).toEqual({
      type: 'track',
      event: 'Survey Response Submitted',
      messageId: '1flow-alert-alert-6f1c2a',
      timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      userId: 'user-1',
      context: {
        integration: { name: '1flow-webhook' },
        library: { name: 'oneflow-relay', version: expect.any(String) }
      }
    })
    expect(properties).toMatchObject({
      survey_id: 'survey-42',
      survey_name: 'Onboarding NPS',
      platform: 'web',
      trigger_event: 'Signed Up',
      answers: NPS_SURVEY_SCREENS.map(({ title, answer, type }) => ({ question: title, answer, type })),
      answer_1: 9,
      answer_3: 'Surveys, Announcements'
    })
    expect(JSON.parse(properties.raw as string)).toEqual(surveyWebhookPayload())
    // The batch carries sentAt (Segment corrects clock skew with it); nothing went to 1Flow.
    expect(segment.requests).toHaveLength(1)
    expect(oneflow.requests).toHaveLength(0)
    await until(async () => (await stats()).pending + (await stats()).leased === 0, 'an empty queue')
  })

  it('takes the token as a query parameter too, and uses the configured event name and host path', async () => {
    relay = await startRelay(oneflow, {
      sources: [source({ segment: { writeKey: SEGMENT_KEY, host: `${segment.url}/v1/`, eventName: 'NPS Answered' } })]
    })
    expect((await webhook(`/webhooks/1flow/web?token=${TOKEN}`, surveyWebhookPayload())).status).toBe(200)
    await segment.waitFor((a) => a.length === 1)
    expect(segmentEvents()[0]).toMatchObject({ event: 'NPS Answered', userId: 'user-1' })
  })

  it('delivers a 40-screen survey whole, under 32 KB', async () => {
    relay = await start()
    expect(
      (await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload({ screens: manyScreens(40, 120) }))).status
    ).toBe(200)
    await segment.waitFor((a) => a.length === 1)
    const event = segmentEvents()[0] as { properties: Record<string, unknown> }
    expect(event.properties.answer_count).toBe(40)
    expect((event.properties.answers as unknown[]).length).toBe(40)
    expect(event.properties.answer_40).toBe('option 0, option 1')
    expect(event.properties.answers_truncated).toBeUndefined()
    expect(Buffer.byteLength(JSON.stringify(event))).toBeLessThan(32 * 1024)
  })

  it('a user without an app user id gets a stable anonymousId from 1Flow', async () => {
    relay = await start()
    for (const alertId of ['a-1', 'a-2'])
      await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload({ alertId, user: { _id: 'of-77' } }))
    await segment.waitFor((a) => a.length === 2)
    expect(segmentEvents().map((e) => [e.anonymousId, e.userId, e.messageId])).toEqual([
      ['1flow-of-77', undefined, '1flow-alert-a-1'],
      ['1flow-of-77', undefined, '1flow-alert-a-2']
    ])
  })
})

describe('1Flow retries never create a second event', () => {
  it('deduplicates on alert_id, also when the copies arrive at once, and for days beyond the dedup window', async () => {
    relay = await start()
    const payload = surveyWebhookPayload({ alertId: 'alert-dup' })
    const answers = await Promise.all([1, 2, 3, 4, 5].map(() => webhook(`/webhooks/1flow/web/${TOKEN}`, payload)))
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200])
    expect(answers.filter((a) => a.body.duplicate === true)).toHaveLength(4)
    await segment.waitFor((a) => a.length === 1)
    // Two days later (1Flow retries hourly for 3 days): the relay's 24 h prune has run, the alert_id is still known.
    await relay.relay.queue.pruneDedup(Date.now() + 48 * 3_600_000 - 24 * 3_600_000)
    expect((await webhook(`/webhooks/1flow/web/${TOKEN}`, payload)).body).toEqual({ success: true, duplicate: true })
    // Without an alert_id, the same body is the same response.
    const noAlert = surveyWebhookPayload()
    delete noAlert.alert_id
    await webhook(`/webhooks/1flow/web/${TOKEN}`, noAlert)
    expect((await webhook(`/webhooks/1flow/web/${TOKEN}`, noAlert)).body.duplicate).toBe(true)
    await segment.waitFor((a) => a.length === 2)
    await new Promise((r) => setTimeout(r, 300))
    expect(segmentEvents()).toHaveLength(2)
  })
})

describe('refusals', () => {
  it('answers 401 for a wrong, missing or misplaced token and stores nothing; the token never reaches the log', async () => {
    relay = await startRelay(oneflow, {
      sources: [source(), { name: 'app', writeKey: 'wk_other_source_0001', projectApiKey: PROJECT_KEY }]
    })
    const wrong = `${TOKEN.slice(0, -1)}x`
    for (const path of [
      `/webhooks/1flow/web/${wrong}`,
      `/webhooks/1flow/web?token=${wrong}`,
      '/webhooks/1flow/web',
      `/webhooks/1flow/nope/${TOKEN}`,
      `/webhooks/1flow/app/${TOKEN}`,
      `/webhooks/1flow/web/${TOKEN.slice(0, 8)}`
    ]) {
      const res = await webhook(path, surveyWebhookPayload())
      expect(res.status, path).toBe(401)
      expect(res.body.code).toBe('unauthorized')
    }
    // A bad token wins over a bad body: nothing about the body is revealed or stored.
    expect((await webhook(`/webhooks/1flow/web/${wrong}`, '{ not json')).status).toBe(401)
    expect(await stats()).toMatchObject({ pending: 0, leased: 0, dead: 0 })
    await new Promise((r) => setTimeout(r, 200))
    expect(segment.requests).toHaveLength(0)
    expect(relay.logs.text).toContain('1Flow webhook refused')
    expect(relay.logs.text).not.toContain(TOKEN.slice(4))
    const metrics = await (await fetch(`${relay.url}/metrics`)).text()
    expect(metrics).toContain('relay_webhook_requests_total{source="web",status="401"} 5')
    expect(metrics).toContain('relay_webhook_requests_total{source="(unknown)",status="401"} 2')
  })

  it('answers 400 for malformed JSON or a body that is not an object, with the token right, and stores nothing', async () => {
    relay = await start()
    const bad = await webhook(`/webhooks/1flow/web/${TOKEN}`, '{"alert_id": "a1", ')
    expect(bad).toMatchObject({ status: 400, body: { code: 'invalid_json' } })
    expect((await webhook(`/webhooks/1flow/web/${TOKEN}`, '[1, 2]')).body.code).toBe('invalid_body')
    expect((await webhook(`/webhooks/1flow/web/${TOKEN}`, '')).status).toBe(400)
    expect(await stats()).toMatchObject({ pending: 0, leased: 0, dead: 0 })
    expect(relay.logs.text).toMatch(/1Flow webhook refused with 400/)
    expect(relay.logs.text).not.toContain(TOKEN.slice(4))
  })

  it('answers 400 for a body nested 5,000 levels deep (never a 5xx, which 1Flow would retry for 3 days), and stores nothing', async () => {
    relay = await start()
    const deep = `{"alert_id":"deep-1","user":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}`
    const res = await webhook(`/webhooks/1flow/web/${TOKEN}`, deep)
    expect(res).toMatchObject({
      status: 400,
      body: { code: 'too_deep', error: expect.stringContaining('nested more than 64 levels') }
    })
    expect(await stats()).toMatchObject({ pending: 0, leased: 0, dead: 0 })
    expect(relay.logs.text).toContain('nested more than 64 levels deep; answered 400')
  })

  it("cannot be suppressed by a client event that uses the webhook's messageId (separate dedup namespaces)", async () => {
    relay = await start()
    // Browser write keys are public: anyone can send an event with messageId "1flow-alert-<id>" first.
    const spoof = await post(relay.url, '/v1/track', {
      event: 'Spoof',
      userId: 'u9',
      messageId: '1flow-alert-alert-6f1c2a'
    })
    expect(spoof.status).toBe(200)
    const res = await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload())
    expect([res.status, res.body]).toEqual([200, { success: true }])
    await segment.waitFor((a) => a.length === 1)
    expect(segmentEvents()[0]).toMatchObject({
      event: 'Survey Response Submitted',
      messageId: '1flow-alert-alert-6f1c2a'
    })
    await oneflow.waitFor((a) => a.length === 1)
    expect(oneflow.accepted[0]!.body.event).toBe('Spoof')
    // And the other way round: 1Flow's retry is still a duplicate of the response, not of the client event.
    expect((await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload())).body).toEqual({
      success: true,
      duplicate: true
    })
  })

  it('answers 503 with Retry-After while the queue is over its disk cap, so 1Flow retries later', async () => {
    oneflow.inject({ kind: 'status', status: 503, times: 1_000_000 })
    relay = await start({ limits: { diskCapBytes: 1024 * 1024 } })
    let filled = 200
    for (let i = 0; i < 80 && filled === 200; i++) {
      filled = (
        await post(relay.url, '/v1/batch', {
          batch: Array.from({ length: 15 }, (_, j) => ({
            type: 'track',
            event: 'E',
            userId: `u${i}-${j}`,
            properties: { blob: 'z'.repeat(2000) }
          }))
        })
      ).status
      if (filled === 200) await new Promise((r) => setTimeout(r, 30))
    }
    expect(filled).toBe(503)
    const res = await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload())
    expect([res.status, res.body.code, res.headers.get('retry-after')]).toEqual([503, 'queue_full', '60'])
    expect((await relay.relay.queue.listDead()).length + segment.requests.length).toBe(0)
    expect(await relay.relay.queue.lease(relay.relay.config.sources[0]!.segment!.laneId, 10, 1000, Date.now())).toEqual(
      []
    )
  })
})

describe('delivery to Segment follows the relay rules', () => {
  it('retries a 429 (honouring Retry-After) and a 5xx, then delivers', async () => {
    relay = await start()
    segment.inject({ status: 429, retryAfter: '1' })
    segment.inject({ status: 503 })
    await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload())
    await segment.waitFor((a) => a.length === 1, 10_000)
    expect(segment.requests.map((r) => r.status)).toEqual([429, 503, 200])
    expect(segment.requests[1]!.at - segment.requests[0]!.at).toBeGreaterThanOrEqual(1000 - 5)
    const metrics = await (await fetch(`${relay.url}/metrics`)).text()
    expect(metrics).toMatch(/relay_delivery_retries_total\{project="segment:web",reason="rate_limited"\} 1/)
    expect(metrics).toMatch(/relay_delivery_requests_total\{endpoint="\/v1\/batch",status_code="200"\} 1/)
  })

  it('dead-letters on a 400 with Segment’s answer, without retrying', async () => {
    relay = await start()
    segment.inject({ status: 400, body: '{"success":false,"message":"bad batch"}' })
    await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload())
    await until(async () => (await stats()).dead === 1, 'the dead letter')
    const [dead] = await relay.relay.queue.listDead()
    expect(dead).toMatchObject({
      status: 400,
      response: '{"success":false,"message":"bad batch"}',
      messageId: '1flow-alert-alert-6f1c2a',
      sourceName: 'web'
    })
    expect(dead!.reason).toContain('Segment answered 400')
    await new Promise((r) => setTimeout(r, 300))
    expect(segment.requests).toHaveLength(1)
    // Replayed after the cause is fixed, it is delivered.
    await relay.relay.queue.replayDead('all', Date.now())
    relay.relay.deliverer.poke()
    await segment.waitFor((a) => a.length === 1)
  })

  it('pauses and alerts when Segment refuses the write key, drops nothing, resumes once it is accepted', async () => {
    relay = await startRelay(oneflow, {
      sources: [source({ segment: { writeKey: 'seg_wk_not_yet_valid_000', host: segment.url } })]
    })
    await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload())
    await until(
      async () => JSON.stringify(await (await fetch(`${relay!.url}/health`)).json()).includes('Segment answered 401'),
      'the alert on /health'
    )
    expect(relay.logs.text).toMatch(/ALERT: Segment answered 401: the Segment write key was refused/)
    expect(relay.logs.text).not.toContain('seg_wk_not_yet_valid_000')
    expect((await stats()).dead).toBe(0)
    segment.addWriteKey('seg_wk_not_yet_valid_000')
    await segment.waitFor((a) => a.length === 1, 12_000)
  })

  it('neither direction waits for the other: with 1Flow down, survey responses still reach Segment', async () => {
    relay = await start()
    oneflow.inject({ kind: 'status', status: 503, times: 1000 })
    for (let i = 0; i < 20; i++)
      await post(relay.url, '/v1/track', { event: `E${i}`, userId: `u${i}`, messageId: `m${i}` })
    await until(() => oneflow.requests.length >= 3, '1Flow failing')
    await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload({ alertId: 'during-1flow-outage' }))
    // 1Flow keeps failing throughout: the response got through beside it, not after it.
    await segment.waitFor((a) => a.length === 1, 15_000)
    expect(oneflow.accepted).toHaveLength(0)
    await until(
      async () => (await stats()).pending + (await stats()).leased === 20,
      'only the 20 events for 1Flow left in the queue'
    )
    expect(oneflow.accepted).toHaveLength(0)
  })

  it('neither direction waits for the other: with Segment down, events still reach 1Flow', async () => {
    relay = await start()
    segment.inject({ status: 503, times: 1000 })
    await webhook(`/webhooks/1flow/web/${TOKEN}`, surveyWebhookPayload({ alertId: 'during-segment-outage' }))
    await until(() => segment.requests.length >= 3, 'Segment failing', 15_000)
    for (let i = 0; i < 20; i++)
      await post(relay.url, '/v1/track', { event: `E${i}`, userId: `u${i}`, messageId: `m${i}` })
    // Segment keeps failing throughout: the events got through beside it, not after it.
    await oneflow.waitFor((a) => a.length === 20, 15_000)
    expect(segment.accepted).toHaveLength(0)
    // 1Flow has the 20 (its stand-in counts a request when it arrives); the relay settles them once answered.
    await until(
      async () => (await stats()).pending + (await stats()).leased === 1,
      'only the survey response left in the queue'
    )
    expect(segment.accepted).toHaveLength(0)
  }, 30_000)
})

describe('config', () => {
  const base = { sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }] }
  const problems = (sourceExtra: Record<string, unknown>) => {
    try {
      parseConfig({ sources: [{ ...base.sources[0], ...sourceExtra }] }, { env: {} })
      return []
    } catch (error) {
      return (error as ConfigError).problems.map((p) => `${p.key}: ${p.message}`)
    }
  }

  it('explains a missing half, a weak token, a bad host and unknown keys', () => {
    expect(problems({ webhookToken: TOKEN })).toEqual([
      expect.stringMatching(/^sources\[0\]\.segment: is required with webhookToken/)
    ])
    expect(problems({ segment: { writeKey: SEGMENT_KEY } })).toEqual([
      expect.stringMatching(/^sources\[0\]\.webhookToken: is required with segment.*openssl rand -hex 24/)
    ])
    expect(problems({ webhookToken: 'short', segment: { writeKey: SEGMENT_KEY } })).toEqual([
      expect.stringMatching(/^sources\[0\]\.webhookToken: must be at least 24/)
    ])
    expect(problems({ webhookToken: TOKEN, segment: { host: 'api.segment.io', region: 'eu' } })).toEqual([
      'sources[0].segment.region: unknown key; expected writeKey, host, eventName',
      expect.stringMatching(/^sources\[0\]\.segment\.writeKey: is required/),
      expect.stringMatching(/^sources\[0\]\.segment\.host: must be an http\(s\) URL.*eu1/)
    ])
    expect(problems({ webhookToken: 'env:HOOK_TOKEN', segment: { writeKey: 'env:SEG_KEY' } })).toEqual([
      'sources[0].webhookToken: reads the environment variable HOOK_TOKEN, which is not set',
      'sources[0].segment.writeKey: reads the environment variable SEG_KEY, which is not set'
    ])
    for (const p of problems({ webhookToken: 'short', segment: { writeKey: SEGMENT_KEY } }))
      expect(p).not.toContain(SEGMENT_KEY)
  })

  it('defaults to Segment US and the standard event name; check-config prints the webhook URL without the token', () => {
    const config = parseConfig({
      sources: [{ ...base.sources[0], webhookToken: TOKEN, segment: { writeKey: SEGMENT_KEY } }]
    })
    expect(config.sources[0]!.segment).toMatchObject({
      host: 'https://api.segment.io',
      eventName: 'Survey Response Submitted',
      laneId: expect.stringMatching(/^segment-[0-9a-f]{12}$/)
    })
    const on = runCli([
      'check-config',
      '--config',
      writeConfig({ sources: [{ ...base.sources[0], webhookToken: TOKEN, segment: { writeKey: SEGMENT_KEY } }] })
    ])
    expect(on.status).toBe(0)
    expect(on.stdout).toContain(
      '1Flow survey responses: POST http://127.0.0.1:8787/webhooks/1flow/web/<webhookToken> → Segment https://api.segment.io/v1/batch as "Survey Response Submitted"'
    )
    expect(on.stdout).not.toContain(TOKEN)
    expect(on.stdout).not.toContain(SEGMENT_KEY)
    const off = runCli(['check-config', '--config', writeConfig(base)])
    expect(off.stdout).toContain('1Flow survey responses: off (add "webhookToken" and "segment"')
  })
})

describe.each(['sqlite', 'postgres'] as const)('values a database cannot hold, on %s', (queueKind) => {
  it('a NUL in the user id and alert_id is cleaned as ingest cleans it; requests committed beside it are unaffected', async () => {
    const queue =
      queueKind === 'sqlite' ? undefined : await createDatabase(inject('pgAdminUrl'), `webhook_nul_${process.pid}`)
    relay = await startRelay(oneflow, {
      ...(queue && { queue }),
      sources: [source(), { name: 'other', writeKey: 'wk_other_source_0001', projectApiKey: PROJECT_KEY }]
    })
    const payload = surveyWebhookPayload({ alertId: 'alert-\u0000nul', user: { user_id: 'user-\u00001', _id: '64f1' } })
    // The webhook and an unrelated source's batch arrive together: one group commit.
    const [hook, batch] = await Promise.all([
      webhook(`/webhooks/1flow/web/${TOKEN}`, payload),
      post(
        relay.url,
        '/v1/batch',
        { batch: Array.from({ length: 5 }, (_, i) => ({ type: 'track', event: `Beside ${i}`, userId: `u${i}` })) },
        'wk_other_source_0001'
      )
    ])
    expect([hook.status, batch.status]).toEqual([200, 200])
    await segment.waitFor((a) => a.length === 1)
    expect(segmentEvents()[0]).toMatchObject({ messageId: '1flow-alert-alert-nul', userId: 'user-1' })
    await oneflow.waitFor((a) => a.length === 5)
  })
})
