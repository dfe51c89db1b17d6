import { describe, expect, it } from 'vitest'
import { manyScreens, surveyWebhookPayload } from '@oneflow-seg/testkit'
import { SURVEY_EVENT_MAX_BYTES, SURVEY_RAW_MAX_CHARS, surveyResponseToTrack } from '../index'

const RECEIVED = Date.parse('2026-11-29T10:00:00.000Z')
const convert = (payload: unknown, eventName?: string) =>
  surveyResponseToTrack(payload, { receivedAt: RECEIVED, fallbackId: 'digest-abc', ...(eventName && { eventName }) })
const bytes = (v: unknown) => Buffer.byteLength(JSON.stringify(v))

describe('surveyResponseToTrack', () => {
  it('turns the documented webhook shape into a Segment track event', () => {
    const { event, alertId, truncated } = convert(surveyWebhookPayload())
    expect(alertId).toBe('alert-6f1c2a')
    expect(truncated).toEqual([])
    const { raw, ...properties } = event.properties
    expect({ ...event, properties }).toEqual({
      type: 'track',
      event: 'Survey Response Submitted',
      messageId: '1flow-alert-alert-6f1c2a',
      timestamp: '2026-11-29T10:00:00.000Z',
      userId: 'user-1',
      properties: {
        survey_id: 'survey-42',
        survey_name: 'Onboarding NPS',
        platform: 'web',
        trigger_event: 'Signed Up',
        project_name: 'Acme Web',
        alert_name: 'submitted_survey',
        alert_id: 'alert-6f1c2a',
        oneflow_user_id: '64f1b2c3d4e5f6a7b8c9d0e1',
        answers: [
          { question: 'How likely are you to recommend us to a friend?', answer: 9, type: 'nps' },
          {
            question: 'What is the main reason for your score?',
            answer: 'Surveys show up at the right moment.',
            type: 'text'
          },
          { question: 'Which features do you use?', answer: ['Surveys', 'Announcements'], type: 'mcq' }
        ],
        answer_count: 3,
        answer_1: 9,
        answer_2: 'Surveys show up at the right moment.',
        answer_3: 'Surveys, Announcements'
      },
      context: { integration: { name: '1flow-webhook' } }
    })
    expect(JSON.parse(raw as string)).toEqual(surveyWebhookPayload())
  })

  it('uses the configured event name', () => {
    expect(convert(surveyWebhookPayload(), 'NPS Answered').event.event).toBe('NPS Answered')
  })

  it('derives a stable anonymousId from the 1Flow user id when there is no app user id', () => {
    const a = convert(surveyWebhookPayload({ alertId: 'a1', user: { _id: 'of-user-9' } })).event
    const b = convert(surveyWebhookPayload({ alertId: 'a2', user: { _id: 'of-user-9' } })).event
    expect(a.userId).toBeUndefined()
    expect(a.anonymousId).toBe('1flow-of-user-9')
    expect(b.anonymousId).toBe(a.anonymousId)
    expect(a.messageId).not.toBe(b.messageId)
  })

  it('falls back to the response itself for identity and to the body digest for the messageId', () => {
    const noAlert = surveyWebhookPayload({ user: {} })
    delete noAlert.alert_id
    const { event, alertId } = convert(noAlert)
    expect(alertId).toBeUndefined()
    expect(event.messageId).toBe('1flow-alert-digest-abc')
    expect(event.anonymousId).toBe('1flow-response-digest-abc')
  })

  it('takes the response time when 1Flow sends one (ISO, epoch seconds or milliseconds)', () => {
    expect(convert(surveyWebhookPayload({ extra: { created_at: '2026-11-28T08:30:00Z' } })).event.timestamp).toBe(
      '2026-11-28T08:30:00.000Z'
    )
    expect(convert(surveyWebhookPayload({ extra: { submitted_at: 1795768200 } })).event.timestamp).toBe(
      '2026-11-27T08:30:00.000Z'
    )
    expect(convert(surveyWebhookPayload({ extra: { timestamp: 1795768200123 } })).event.timestamp).toBe(
      '2026-11-27T08:30:00.123Z'
    )
    expect(convert(surveyWebhookPayload({ extra: { timestamp: 'not a date' } })).event.timestamp).toBe(
      '2026-11-29T10:00:00.000Z'
    )
  })

  it('never throws on odd payloads: missing, wrong-typed and unknown fields', () => {
    for (const payload of [
      null,
      42,
      'text',
      [],
      {},
      { survey_info: 'x', user: [], screens: 'no' },
      { survey_info: { screens: [null, 7, { answer: { nested: [1, { deep: true }] } }] } }
    ]) {
      const { event } = convert(payload)
      expect(event.type).toBe('track')
      expect(event.anonymousId ?? event.userId).toBeTruthy()
      expect(typeof event.properties.raw).toBe('string')
    }
    const odd = convert({ survey_info: { screens: [null, 7, { answer: { nested: [1, { deep: true }] } }] } }).event
      .properties
    expect(odd.answers).toEqual([
      { question: null, answer: null, type: null },
      { question: null, answer: 7, type: null },
      { question: null, answer: { nested: [1, { deep: true }] }, type: null }
    ])
    expect(odd.answer_3).toBe('{"nested":[1,{"deep":true}]}')
  })

  it("keeps a 40-screen survey whole and under Segment's 32 KB", () => {
    const { event, truncated } = convert(surveyWebhookPayload({ screens: manyScreens(40) }))
    expect(truncated).toEqual([])
    expect(event.properties.answer_count).toBe(40)
    expect((event.properties.answers as unknown[]).length).toBe(40)
    expect(event.properties.answer_40).toBe('option 0, option 1')
    expect(event.properties.answer_5).toBe('option 1, option 2')
    expect(bytes(event)).toBeLessThanOrEqual(SURVEY_EVENT_MAX_BYTES)
  })

  it('cuts long answers and then the raw copy to stay under the limit, and says so', () => {
    const { event, truncated } = convert(surveyWebhookPayload({ screens: manyScreens(60, 3000) }))
    expect(truncated).toEqual(['answers', 'raw'])
    expect(event.properties.answers_truncated).toBe(true)
    expect(event.properties.raw_truncated).toBe(true)
    expect(event.properties.answer_count).toBe(60)
    expect((event.properties.raw as string).length).toBeLessThanOrEqual(SURVEY_RAW_MAX_CHARS)
    expect(bytes(event)).toBeLessThanOrEqual(SURVEY_EVENT_MAX_BYTES)
    // The short answers are untouched.
    expect(event.properties.answer_1).toBe(0)
  })

  it('stays under the limit with thousands of screens or multi-byte text', () => {
    const huge = convert(surveyWebhookPayload({ screens: manyScreens(2000) })).event
    expect(bytes(huge)).toBeLessThanOrEqual(SURVEY_EVENT_MAX_BYTES)
    expect(huge.properties.answer_count).toBe(2000)
    expect((huge.properties.answers as unknown[]).length).toBeLessThan(2000)
    const emoji = convert(
      surveyWebhookPayload({ screens: [{ title: '😀'.repeat(20_000), answer: '"é"'.repeat(20_000), type: 'text' }] })
    ).event
    expect(bytes(emoji)).toBeLessThanOrEqual(SURVEY_EVENT_MAX_BYTES)
  })

  it('never lets prototype keys from the payload through', () => {
    const { event } = convert(
      JSON.parse(
        '{"alert_id":"p1","__proto__":{"polluted":true},"survey_info":{"screens":[{"title":"q","answer":{"__proto__":{"x":1}},"type":"text"}]}}'
      )
    )
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    expect(JSON.stringify(event.properties.answers)).not.toContain('__proto__')
  })
})
