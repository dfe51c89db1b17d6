import { packageBuild } from '../../tooling/tsup.config'

export default packageBuild({ index: 'src/index.ts', subscriptions: 'src/subscriptions.ts', mapping: 'src/mapping.ts' }, {}, { esmModules: true })
