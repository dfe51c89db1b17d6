/**
 * 1Flow survey-response webhook payloads for tests, in the shape 1Flow documents (docs/oneflow-api.md): `alert_name`, `alert_id`, `project_name`, `survey_id`, `platform`, `survey_info` {`name`,
 * `description`, `platforms`, `trigger_event_name`, `screens[]` of {`title`, `answer`, `type`}},
 * `trigger_event` {`event_name`} and `user`. The user object is cut off in every public copy; ours carries
 * the identities the relay reads (`user_id`: the app's id, `_id`: 1Flow's own).
 */

export interface SurveyScreen {
  readonly title: string
  readonly answer: unknown
  readonly type: string
}

export interface SurveyWebhookOptions {
  readonly alertId?: string
  readonly screens?: readonly SurveyScreen[]
  /** The `user` object; default a user with an app user id and a 1Flow id. */
  readonly user?: Record<string, unknown>
  readonly extra?: Record<string, unknown>
}

export const NPS_SURVEY_SCREENS: readonly SurveyScreen[] = [
  { title: 'How likely are you to recommend us to a friend?', answer: 9, type: 'nps' },
  { title: 'What is the main reason for your score?', answer: 'Surveys show up at the right moment.', type: 'text' },
  { title: 'Which features do you use?', answer: ['Surveys', 'Announcements'], type: 'mcq' }
]

/** One webhook body as 1Flow would POST it for a submitted survey. */
export function surveyWebhookPayload(options: SurveyWebhookOptions = {}): Record<string, unknown> {
  return {
    alert_name: 'submitted_survey',
    alert_id: options.alertId ?? 'alert-6f1c2a',
    project_name: 'Acme Web',
    survey_id: 'survey-42',
    platform: 'web',
    survey_info: {
      name: 'Onboarding NPS',
      description: 'Asked after the first week',
      platforms: ['web'],
      trigger_event_name: 'Signed Up',
      screens: options.screens ?? NPS_SURVEY_SCREENS
    },
    trigger_event: { event_name: 'Signed Up' },
    user: options.user ?? { user_id: 'user-1', _id: '64f1b2c3d4e5f6a7b8c9d0e1', name: 'Ada', email: 'ada@example.com' },
    ...options.extra
  }
}

/** `count` screens of mixed question types, for large surveys. */
export function manyScreens(count: number, answerChars = 40): SurveyScreen[] {
  const types = ['nps', 'rating', 'text', 'mcq', 'checkbox'] as const
  return Array.from({ length: count }, (_, i) => {
    const type = types[i % types.length] as string
    const answer =
      type === 'nps'
        ? i % 11
        : type === 'rating'
          ? (i % 5) + 1
          : type === 'text'
            ? `answer ${i + 1} `.padEnd(answerChars, 'x')
            : type === 'mcq'
              ? `choice ${i % 4}`
              : [`option ${i % 3}`, `option ${(i + 1) % 3}`]
    return { title: `Question ${i + 1}: how do you feel about part ${i + 1} of the product?`, answer, type }
  })
}
