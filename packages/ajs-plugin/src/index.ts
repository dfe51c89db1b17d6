export { oneFlow, PLUGIN_NAME } from './one-flow-plugin'
export type { OneFlowPluginOptions } from './one-flow-plugin'
export { VERSION } from './version'
