import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { BUDGETS, measureMappingChunk, measurePluginBundle, measurePluginSplit } from '@oneflow-seg/testkit'

const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

describe('size budget (built dist, minified, gzip -9)', () => {
  it(`the default import stays within ${BUDGETS.pluginGzipBytes} bytes gzip`, async () => {
    const size = await measurePluginBundle(packageDir)
    expect(size.gzipBytes).toBeGreaterThan(1000)
    expect(size.gzipBytes).toBeLessThanOrEqual(BUDGETS.pluginGzipBytes)
  })

  it(`split by an app's bundler, what loads before the plugin runs stays within ${BUDGETS.pluginSplitGzipBytes} bytes gzip`, async () => {
    const size = await measurePluginSplit(packageDir)
    expect(size.gzipBytes).toBeGreaterThan(1000)
    expect(size.gzipBytes).toBeLessThanOrEqual(BUDGETS.pluginSplitGzipBytes)
    // The delivery code is a chunk of its own, fetched by load(): counted once the plugin loads, not before.
    expect(size.loadedGzipBytes).toBeGreaterThan(size.gzipBytes + 1000)
  })

  it('custom mappings cost a separate, lazily loaded chunk that the default import does not include', async () => {
    const [plugin, mapping] = await Promise.all([measurePluginBundle(packageDir), measureMappingChunk(packageDir)])
    expect(mapping.gzipBytes).toBeGreaterThan(plugin.gzipBytes)
  })
})
