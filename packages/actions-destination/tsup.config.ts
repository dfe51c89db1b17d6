import type { Options } from 'tsup'
import { nodeEsmWrapper, packageBuild } from '../../tooling/tsup.config'

// Two runtimes, two platforms: device mode runs in the browser, cloud mode in Node (Segment's or yours).
export default [
  packageBuild({ browser: 'src/browser/index.ts' }, { platform: 'browser' }),
  packageBuild({ cloud: 'src/cloud/index.ts' }, { platform: 'node', onSuccess: nodeEsmWrapper('cloud') })
] as Options[]
