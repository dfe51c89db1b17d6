/**
 * `@oneflow-seg/core`: everything about Segment → 1Flow that does not depend on a runtime. Pure: this entry
 * imports nothing at run time (a lint rule enforces it); custom mappings live in `@oneflow-seg/core/mapping`.
 */
export { settings, resolveSettings, DEFAULT_SDK_URL, DEFAULT_API_BASE_URL } from './settings'
export type { Settings, ResolvedSettings } from './settings'
export { presets } from './presets'
export type { AutomaticPreset } from './presets'
export { actions, actionKeys, isActionKey, toCommand, defaultMapping } from './actions/registry'
export type { ActionKey } from './actions/registry'
export { identifyUser, identifyUserFields, toIdentifyCommand } from './actions/identify-user'
export type { IdentifyUserPayload } from './actions/identify-user'
export { trackEvent, trackEventFields, toTrackCommand } from './actions/track-event'
export type { TrackEventPayload } from './actions/track-event'
export { trackPage, trackPageFields, toPageCommand, PAGE_EVENT_NAME } from './actions/track-page'
export type { TrackPagePayload } from './actions/track-page'
export { defineFields, defineSettings } from './field-types'
export type { PayloadOf } from './field-types'
export { skip, toTimestamp } from './commands'
export type { Command, IdentifyCommand, TrackCommand, Skip, SkipReason, CommandContext } from './commands'
export { validatePayload } from './payload'
export { toSdkCall } from './sdk-call'
export type { SdkCall } from './sdk-call'
export { toJsonValue, toJsonObject, toId, MAX_DEPTH } from './json-value'
export type { JsonValue, JsonObject, JsonPrimitive } from './json-value'
export { isEnabledByIntegrations, eventTimestamp, INTEGRATION_NAMES } from './segment-event'
export type { SegmentEvent } from './segment-event'
export { mapWithPresets, presetRoutes, finishRoutes, resolveDefaultPayload } from './route'
export type { MappedResult, Outcome, Invalid, Route, MapOptions } from './route'
export { validateSubscriptions, MAX_SUBSCRIPTIONS } from './subscriptions'
export type { Subscription, ValidSubscription } from './subscriptions'
export { lintFql, suggestFql } from './fql-lint'
export type { FqlProblem } from './fql-lint'
export { ONEFLOW_LIMITS, buildRequest, packBatches, toWire, toBatchItem, utf8ByteLength } from './http-contract'
export type {
  OneFlowRequest,
  OneFlowPath,
  ApiTarget,
  IdentifyBody,
  TrackBody,
  BatchItem,
  BatchBody,
  PackedBatch,
  PackResult
} from './http-contract'
export { classifyResponse, parseRetryAfter, fullJitterDelay, MAX_RETRY_AFTER_MS } from './response-policy'
export type { Decision, ResponseFacts } from './response-policy'
export {
  OneFlowError,
  InvalidSettingsError,
  InvalidSubscriptionError,
  InvalidPayloadError,
  PayloadTooLargeError,
  SdkLoadError
} from './errors'
export type { Remedy, SubscriptionProblem, InvalidPayloadReason } from './errors'
