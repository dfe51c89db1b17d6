/** The Analytics.js plugin's (and the relay's) name: a module of its own, so browser start-up code carries only it. */
export const PLUGIN_NAME = '1Flow'
