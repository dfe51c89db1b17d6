import { nodeEsmWrapper, packageBuild } from '../../tooling/tsup.config'

export default packageBuild(
  { index: 'src/index.ts', cli: 'src/cli.ts' },
  { platform: 'node', target: 'node20', onSuccess: nodeEsmWrapper('index') }
)
