import { packageTests } from '../../tooling/vitest.config.ts'

export default packageTests()
