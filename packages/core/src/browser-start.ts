/**
 * `@oneflow-seg/core/browser-start`: what a browser adapter needs before it loads anything — the SDK settings, the
 * pre-ready buffer, the script loader (to start the SDK's download), the destination names. Nothing that delivers:
 * that is `@oneflow-seg/core/browser`, which an adapter can import lazily so that an app's bundler keeps it off the
 * app's start-up path. Every export here is also exported by `@oneflow-seg/core/browser`.
 */
export { createScriptLoader } from './script-loader.js'
export type { ScriptDocument } from './script-loader.js'
export { PreReadyBuffer, DEFAULT_BUFFER_LIMIT } from './pre-ready-buffer.js'
export type { DropReason } from './pre-ready-buffer.js'
export { resolveSdkSettings, DEFAULT_SDK_TIMEOUT_MS } from './settings.js'
export type { ResolvedSdkSettings } from './settings.js'
export { DESTINATION_NAMES } from './destination-names.js'
export { PLUGIN_NAME } from './plugin-name.js'
export { userAtStart } from './user-at-start.js'
export type { UserAtStart } from './user-at-start.js'
export { InvalidSettingsError, ChunkLoadError } from './errors.js'
export { MAX_SUBSCRIPTIONS } from './subscription-shape.js'
export type { Subscription } from './subscription-shape.js'
