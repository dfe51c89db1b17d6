import { packageBuild } from '../../tooling/tsup.config'

export default packageBuild({ index: 'src/index.ts' }, { platform: 'browser' })
