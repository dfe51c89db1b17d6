/**
 * `@oneflow-seg/core`: everything about Segment → 1Flow that does not depend on a runtime. Pure: this entry
 * imports nothing at run time (a lint rule enforces it); custom mappings live in `@oneflow-seg/core/mapping`.
 */
export {
  deviceSettings,
  cloudSettings,
  resolveSettings,
  resolveSdkSettings,
  DEFAULT_SDK_URL,
  DEFAULT_API_BASE_URL,
  DEFAULT_SDK_TIMEOUT_MS
} from './settings.js'
export type { DeviceSettings, CloudSettings, ResolvedSettings, ResolvedSdkSettings } from './settings.js'
export { deniedConsent } from './consent.js'
export { consentSkip } from './consent-skip.js'
export { presets } from './presets.js'
export type { AutomaticPreset } from './presets.js'
export { actions, actionKeys, isActionKey, toCommand, defaultMapping } from './actions/registry.js'
export type { ActionKey } from './actions/registry.js'
export { identifyUser, identifyUserFields, toIdentifyCommand } from './actions/identify-user.js'
export type { IdentifyUserPayload } from './actions/identify-user.js'
export { trackEvent, trackEventFields, toTrackCommand } from './actions/track-event.js'
export type { TrackEventPayload } from './actions/track-event.js'
export { trackPage, trackPageFields, toPageCommand, PAGE_EVENT_NAME } from './actions/track-page.js'
export { identifyGroup, identifyGroupFields, toGroupCommand, GROUP_ATTRIBUTE_PREFIX } from './actions/identify-group.js'
export type { IdentifyGroupPayload } from './actions/identify-group.js'
export type { TrackPagePayload } from './actions/track-page.js'
export { defineFields, defineSettings } from './field-types.js'
export { cloudBatchingFields, DEFAULT_BATCH_SIZE } from './actions/batching-fields.js'
export type { PayloadOf } from './field-types.js'
export { skip, toTimestamp, commandTimestamp } from './commands.js'
export type { Command, IdentifyCommand, TrackCommand, Skip, SkipReason, CommandContext } from './commands.js'
export { validatePayload } from './payload.js'
export { toSdkCall } from './sdk-call.js'
export type { SdkCall } from './sdk-call.js'
export { toJsonValue, toJsonObject, toId, exceedsDepth, MAX_DEPTH } from './json-value.js'
export type { JsonValue, JsonObject, JsonPrimitive } from './json-value.js'
export { isEnabledByIntegrations, eventTimestamp } from './segment-event.js'
export { DESTINATION_NAMES } from './destination-names.js'
export type { SegmentEvent } from './segment-event.js'
export { presetOutcome } from './preset-path.js'
export type { PresetOutcome } from './preset-path.js'
export { mapWithPresets, presetRoutes, finishRoutes, resolveDefaultPayload } from './route.js'
export type { MappedResult, Outcome, Invalid, Route, MapOptions } from './route.js'
export { MAX_SUBSCRIPTIONS } from './subscription-shape.js'
export type { Subscription, ValidSubscription } from './subscription-shape.js'
export { ONEFLOW_LIMITS, buildRequest, packBatches, toWire, toBatchItem, utf8ByteLength } from './http-contract.js'
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
} from './http-contract.js'
export { classifyResponse, parseRetryAfter, fullJitterDelay, MAX_RETRY_AFTER_MS } from './response-policy.js'
export type { Decision, ResponseFacts, ResponseParty } from './response-policy.js'
export { OneFlowError, InvalidSettingsError, ChunkLoadError } from './errors.js'
export type { Remedy } from './errors.js'
export { InvalidSubscriptionError } from './subscription-errors.js'
export type { SubscriptionProblem } from './subscription-errors.js'
export { InvalidPayloadError, PayloadTooLargeError } from './payload-errors.js'
export type { InvalidPayloadReason } from './payload-errors.js'
export { SdkLoadError } from './sdk-client.js'
export {
  surveyResponseToTrack,
  SURVEY_RESPONSE_EVENT,
  SURVEY_EVENT_MAX_BYTES,
  SURVEY_RAW_MAX_CHARS
} from './survey-response.js'
export {
  SEGMENT_EVENT_TYPES,
  SEGMENT_LIMITS,
  SEGMENT_DEFAULT_HOST,
  SEGMENT_PATHS,
  checkSegmentEvent,
  isValidMessageId,
  segmentBatchBody
} from './segment-contract.js'
export type { SegmentEventType, SegmentRoute, SegmentEventProblem } from './segment-contract.js'
export type { SurveyConversion, SurveyConversionOptions, SurveyAnswer, SegmentTrackEvent } from './survey-response.js'
export { toSdkClient, loadOneFlowSdk, browserSdkDeps } from './sdk-client.js'
export { followUser } from './follow-user.js'
export { userAtStart } from './user-at-start.js'
export type { UserSource } from './follow-user.js'
export type { UserAtStart } from './user-at-start.js'
export type {
  SdkClient,
  SdkLoaderDeps,
  SdkLoadOptions,
  OneFlowSdkObject,
  OneFlowSdkFunction,
  BrowserScope
} from './sdk-client.js'
export { createScriptLoader } from './script-loader.js'
export type { ScriptDocument } from './script-loader.js'
export { PreReadyBuffer, DEFAULT_BUFFER_LIMIT } from './pre-ready-buffer.js'
export type { DropReason } from './pre-ready-buffer.js'
