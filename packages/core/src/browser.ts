/**
 * `@oneflow-seg/core/browser`: what the browser adapters need and nothing else — the SDK loader and client, the
 * pre-ready buffer, the presets' direct path, the SDK settings. Importing it (rather than the main entry) keeps an
 * app's eager bundle to these modules when a bundler splits out the custom-mapping chunk.
 */
export { browserSdkDeps, createScriptLoader, loadOneFlowSdk, DEFAULT_SDK_TIMEOUT_MS } from './sdk-client.js'
export type { SdkClient, SdkLoaderDeps, BrowserScope, ScriptDocument } from './sdk-client.js'
export { PreReadyBuffer, DEFAULT_BUFFER_LIMIT } from './pre-ready-buffer.js'
export { presetOutcome } from './preset-path.js'
export type { PresetOutcome } from './preset-path.js'
export { resolveSdkSettings } from './settings.js'
export type { ResolvedSdkSettings } from './settings.js'
export { DESTINATION_NAMES } from './segment-event.js'
export type { SegmentEvent } from './segment-event.js'
export { InvalidSettingsError } from './errors.js'
export { MAX_SUBSCRIPTIONS } from './subscription-shape.js'
export type { Subscription } from './subscription-shape.js'
export type { MappedResult } from './route.js'
