import { packageTests } from '../../tooling/vitest.config.ts'

// A fresh clone installs and builds everything while every other package tests beside it (the container image
// build among them): on a loaded 2-core machine that has taken 7 minutes.
export default packageTests({ testTimeout: 1_200_000, hookTimeout: 60_000 })
