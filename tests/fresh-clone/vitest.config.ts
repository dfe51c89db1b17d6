import { packageTests } from '../../tooling/vitest.config.ts'

// A fresh clone installs and builds everything while every other package tests beside it.
export default packageTests({ testTimeout: 600_000, hookTimeout: 60_000 })
