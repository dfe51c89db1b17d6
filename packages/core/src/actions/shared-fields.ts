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
    description:
      "An anonymous identifier for the user. Sent to 1Flow's HTTP API (cloud mode, the relay). In the browser 1Flow's SDK keeps its own anonymous visitor id and takes none, so device mode does not pass it.",
    type: 'string',
    default: { '@path': '$.anonymousId' }
  }
})
