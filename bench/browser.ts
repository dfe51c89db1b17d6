/**
 * browser: bundle sizes (built dists, minified, gzip -9; the plugin also as an app's bundler splits it) and the
 * cost of one awaited track() through the Analytics.js plugin after load, with real analytics-next Context
 * objects, in headless Chromium: median µs per call over 100 batches of 100.
 */
import { join } from 'node:path'
import {
  bundlePage,
  launchChromium,
  measureDestinationBundle,
  measureMappingChunk,
  measurePluginBundle,
  measurePluginSplit,
  openPage,
  PageServer
} from '@oneflow-seg/testkit'
import { machine, median, repoRoot } from './_machine'

const root = repoRoot()
const BATCHES = 100
const PER_BATCH = 100

const plugin = await measurePluginBundle(join(root, 'packages/ajs-plugin'))
const pluginSplit = await measurePluginSplit(join(root, 'packages/ajs-plugin'))
const mapping = await measureMappingChunk(join(root, 'packages/ajs-plugin'))
const destination = await measureDestinationBundle(join(root, 'packages/actions-destination'))

const server = await PageServer.start(await bundlePage(join(root, 'bench/_browser-page.ts')), { isolated: true })
const browser = await launchChromium()
let perCall: number[]
try {
  const opened = await openPage(browser, server, {})
  // Warm up, then measure.
  await opened.page.evaluate(() =>
    (window as unknown as { harness: { run(b: number, n: number): Promise<number[]> } }).harness.run(50, 100)
  )
  perCall = await opened.page.evaluate(
    ([b, n]) => (window as unknown as { harness: { run(b: number, n: number): Promise<number[]> } }).harness.run(b, n),
    [BATCHES, PER_BATCH] as const
  )
  await opened.close()
} finally {
  await browser.close()
  await server.close()
}

const round = (n: number) => Math.round(n * 100) / 100
console.log(
  JSON.stringify({
    machine: machine(),
    chromium: browser.version(),
    plugin_bytes: plugin.bytes,
    mapping_chunk_gzip_bytes: mapping.gzipBytes,
    destination_bytes: destination.bytes,
    batches: BATCHES,
    per_batch: PER_BATCH,
    plugin_track_us_p90: round(perCall.sort((a, b) => a - b)[Math.floor(perCall.length * 0.9)] as number)
  })
)
console.log(
  JSON.stringify({
    bench: 'browser',
    plugin_gzip_bytes: plugin.gzipBytes,
    plugin_split_gzip_bytes: pluginSplit.gzipBytes,
    plugin_split_loaded_gzip_bytes: pluginSplit.loadedGzipBytes,
    destination_gzip_bytes: destination.gzipBytes,
    plugin_track_us: round(median(perCall))
  })
)
