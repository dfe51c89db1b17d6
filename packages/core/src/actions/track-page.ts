import { defineFields, type PayloadOf } from '../field-types.js'
import type { CommandContext, TrackCommand } from '../commands.js'
import { identityFields, PAGE_EVENT_NAME } from './shared-fields.js'
import { buildTrackCommand, trackEventFields } from './track-event.js'

export { PAGE_EVENT_NAME }

export const trackPageFields = /* @__PURE__ */ defineFields({
  event_name: {
    ...trackEventFields.event_name,
    description: 'The 1Flow event name for a page view.',
    default: PAGE_EVENT_NAME
  },
  userId: identityFields.userId,
  anonymousId: identityFields.anonymousId,
  properties: {
    ...trackEventFields.properties,
    label: 'Page Properties',
    description: 'Information about the page viewed.',
    default: {
      name: { '@path': '$.name' },
      path: { '@path': '$.properties.path' },
      url: { '@path': '$.properties.url' },
      title: { '@path': '$.properties.title' },
      referrer: { '@path': '$.properties.referrer' },
      search: { '@path': '$.properties.search' }
    }
  }
})

export type TrackPagePayload = PayloadOf<typeof trackPageFields>

/** Opt-in (in no preset): subscribe it to `type = "page"` to send page views to 1Flow as events. */
export const trackPage = {
  title: 'Track Page View',
  description: 'Send a page view to 1Flow as an event (page_view by default).',
  defaultSubscription: 'type = "page"',
  fields: trackPageFields
} as const

/** page → `logEvent('page_view', {name, path, url, title, referrer, search})`. */
export function toPageCommand(payload: unknown, context: CommandContext = {}): TrackCommand {
  return buildTrackCommand(trackPageFields, payload, context)
}
