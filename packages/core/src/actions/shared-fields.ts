import { defineFields } from '../field-types.js'

/** The event name Track Page View sends by default. */
export const PAGE_EVENT_NAME = 'page_view'

/** Identity fields shared by every 1Flow action; defined once so cloud and device mode cannot drift. */
export const identityFields = /* @__PURE__ */ defineFields({
  userId: {
    label: 'User ID',
    description: 'A unique identifier for the user.',
    type: 'string',
    default: { '@path': '$.userId' }
  },
  anonymousId: {
    label: 'Anonymous ID',
    description: "An anonymous identifier for the user. Sent by cloud mode; 1Flow's web SDK keeps its own.",
    type: 'string',
    default: { '@path': '$.anonymousId' }
  }
})
