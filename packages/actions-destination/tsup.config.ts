import { packageBuild } from '../../tooling/tsup.config'

export default packageBuild({ browser: 'src/browser/index.ts' }, { platform: 'browser' })
