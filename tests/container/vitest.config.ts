import { packageTests } from '../../tooling/vitest.config.ts'

// Making the base image and building the relay's image (npm install, better-sqlite3 compiled) take minutes on a
// loaded machine; they run once, in beforeAll.
export default packageTests({ testTimeout: 120_000, hookTimeout: 900_000 })
