import { packageTests } from '../../tooling/vitest.config'

export default packageTests()
