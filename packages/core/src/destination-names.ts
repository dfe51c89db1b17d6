/**
 * The name each runtime answers to in a Segment `integrations` object. Analytics.js knows a device-mode
 * destination by its own name, so each mode has one: `1Flow` (the Analytics.js plugin, the relay), `1Flow Web
 * (Actions)` (device mode), `1Flow Cloud (Actions)` (cloud mode). Turning one off leaves the others on.
 */
import { PLUGIN_NAME } from './plugin-name.js'

export const DESTINATION_NAMES = {
  plugin: PLUGIN_NAME,
  web: '1Flow Web (Actions)',
  cloud: '1Flow Cloud (Actions)'
} as const
