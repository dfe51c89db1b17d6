/**
 * `@oneflow-seg/core/browser`: what a browser adapter needs to deliver — the SDK loader and client, the presets'
 * direct path. What it needs before that (settings, pre-ready buffer, script loader, names) is
 * `@oneflow-seg/core/browser-start`. The two share no module but core's errors and event helpers, so an adapter
 * that imports the start-up part eagerly and this one lazily gives an app's bundler two clean chunks: the
 * start-up part on the app's start-up path, the rest fetched when the adapter loads (docs/browser-bundles.md).
 */
export { browserSdkDeps, loadOneFlowSdk } from './sdk-client.js'
export type { SdkClient, SdkLoaderDeps, BrowserScope } from './sdk-client.js'
export { presetOutcome } from './preset-path.js'
export { followUser } from './follow-user.js'
export { userAtStart } from './user-at-start.js'
export type { UserSource } from './follow-user.js'
export type { UserAtStart } from './user-at-start.js'
export type { PresetOutcome } from './preset-path.js'
export type { SegmentEvent } from './segment-event.js'
export type { Command } from './commands.js'
export type { MappedResult } from './route.js'
