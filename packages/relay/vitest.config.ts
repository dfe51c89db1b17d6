import { packageTests } from '../../tooling/vitest.config.ts'

export default packageTests({ globalSetup: ['src/__tests__/global-setup.ts'] })
