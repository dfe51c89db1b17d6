import { packageTests } from '../../tooling/vitest.config.ts'

export default packageTests({ testTimeout: 240_000, hookTimeout: 300_000 })
