import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect, it } from 'vitest'
import { BUDGETS, measureDestinationBundle } from '@oneflow-seg/testkit'

const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')

it(`the device-mode bundle as Segment ships it (runtime included) stays within ${BUDGETS.destinationGzipBytes} bytes gzip`, async () => {
  const size = await measureDestinationBundle(packageDir)
  expect(size.gzipBytes).toBeGreaterThan(5000)
  expect(size.gzipBytes).toBeLessThanOrEqual(BUDGETS.destinationGzipBytes)
})
