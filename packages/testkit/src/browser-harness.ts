/**
 * Real browser tests: Debian's Chromium driven by playwright-core, pages served from 127.0.0.1, 1Flow's
 * SDK URL answered by the recording SDK (late, 404 or never, on request), every other off-machine
 * request aborted.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { build } from 'esbuild'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import type { recordedState } from './browser/page-harness'
import type { ExpectedCall, Fixture, FixtureAdapter } from './fixture-json'
import { expectedOutcome } from './fixtures'
import { recordingSdkScript, type SdkShape } from './recording-sdk'

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic'
]
export const DEFAULT_SDK_URL = 'https://1flow.app/js/1flow.js'

/**
 * Segment's browser builds alias liquidjs to a stub (the @liquid directive is a no-op in device mode); so do
 * core's browser builds, and so do pages bundled from source here: core's own stub. Found from testkit's
 * package.json so that it resolves from bundled benchmarks too.
 */
export const LIQUID_STUB = join(
  dirname(createRequire(import.meta.url).resolve('@oneflow-seg/testkit/package.json')),
  '..',
  'core',
  'src',
  'liquid-stub.ts'
)

/** Launches headless Chromium with a fresh profile (playwright creates a temporary user-data-dir). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_FLAGS, headless: true })
}

/** Bundles a browser test page (TypeScript, workspace packages from source) into ES module files. */
export async function bundlePage(entry: string): Promise<Map<string, string>> {
  const result = await build({
    entryPoints: { entry },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    outdir: '/bundle',
    conditions: ['@oneflow-seg/source'],
    alias: { liquidjs: LIQUID_STUB },
    define: { 'process.env.NODE_ENV': '"production"' },
    logLevel: 'error'
  })
  return new Map(result.outputFiles.map((f) => [f.path.replace(/^\/bundle\//, ''), f.text]))
}

export interface SdkServing {
  readonly shape?: SdkShape
  /**
   * Hold the answer until the test calls `releaseSdk()`: "the SDK is late" without a race against how fast a
   * loaded machine runs the test's own steps.
   */
  readonly held?: boolean
  /** Answer with this status (e.g. 404) instead of the SDK. */
  readonly status?: number
  /** Never answer. */
  readonly hang?: boolean
}

/** A static server on 127.0.0.1 for a bundled page. */
export class PageServer {
  private constructor(
    private readonly server: Server,
    readonly origin: string,
    /** Paths requested so far (e.g. to prove a lazy chunk was or was not loaded). */
    readonly requests: string[]
  ) {}

  /** `isolated` serves the page cross-origin isolated (COOP/COEP), which gives performance.now() 5 µs resolution. */
  static async start(files: Map<string, string>, options: { isolated?: boolean } = {}): Promise<PageServer> {
    const html = `<!doctype html><html><head><meta charset="utf-8"><title>oneflow-seg test</title>
<script>
// Records every timer callback so tests can prove nothing keeps firing after a failure.
window.__timers = { fires: 0 };
for (const name of ['setTimeout', 'setInterval']) {
  const original = window[name];
  window[name] = function (fn, ms, ...rest) {
    return original.call(window, function (...args) { window.__timers.fires++; return typeof fn === 'function' ? fn.apply(this, args) : undefined }, ms, ...rest);
  };
}
</script>
<script type="module" src="/entry.js"></script></head><body></body></html>`
    const requests: string[] = []
    const isolation = options.isolated
      ? { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' }
      : {}
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0] as string
      requests.push(path)
      if (path === '/') return void res.writeHead(200, { 'content-type': 'text/html', ...isolation }).end(html)
      const body = files.get(path.slice(1))
      if (body === undefined) return void res.writeHead(404).end()
      res.writeHead(200, { 'content-type': 'text/javascript', ...isolation }).end(body)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return new PageServer(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests)
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

export interface OpenedPage {
  readonly context: BrowserContext
  readonly page: Page
  /** Every request the page made to the SDK URL. */
  readonly sdkRequests: string[]
  /** Off-machine requests that were aborted. */
  readonly aborted: string[]
  /** Console output of the page (`level: text`). */
  readonly console: string[]
  /** Lets a `held` SDK answer now. */
  releaseSdk(): void
  close(): Promise<void>
}

/** Opens the served page in a new browser context with the SDK URL answered as `sdk` says. */
export async function openPage(
  browser: Browser,
  server: PageServer,
  sdk: SdkServing = {},
  sdkUrl = DEFAULT_SDK_URL
): Promise<OpenedPage> {
  const context = await browser.newContext()
  const sdkRequests: string[] = []
  const aborted: string[] = []
  let releaseSdk = () => {}
  const released = sdk.held ? new Promise<void>((resolve) => (releaseSdk = resolve)) : Promise.resolve()
  await context.route('**/*', async (route) => {
    const url = route.request().url()
    if (url.split('?')[0] === sdkUrl) {
      sdkRequests.push(url)
      if (sdk.hang) return
      await released
      if (sdk.status && sdk.status !== 200)
        return route.fulfill({ status: sdk.status, body: 'not found' }).catch(() => undefined)
      return route
        .fulfill({ status: 200, contentType: 'text/javascript', body: recordingSdkScript({ shape: sdk.shape }) })
        .catch(() => undefined)
    }
    if (new URL(url).hostname === '127.0.0.1') return route.continue()
    aborted.push(url)
    return route.abort()
  })
  const page = await context.newPage()
  const errors: string[] = []
  const consoleLines: string[] = []
  page.on('pageerror', (e) => errors.push(e.message))
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`))
  await page.goto(server.origin + '/')
  await page
    .waitForFunction(() => (window as { harness?: unknown }).harness !== undefined, undefined, { timeout: 10_000 })
    .catch((e: Error) => {
      throw new HarnessError(`the test page did not start: ${errors.join('; ') || e.message}`)
    })
  return { context, page, sdkRequests, aborted, console: consoleLines, releaseSdk, close: () => context.close() }
}

export class HarnessError extends Error {
  override readonly name = 'HarnessError'
}

/** What a browser adapter should show for a fixture: the SDK calls (method form) and log lines explaining what was not sent. */
export function browserExpectation(
  fixture: Fixture,
  adapter: FixtureAdapter = 'browser'
): { calls: unknown[]; logIncludes: string[] } {
  const { calls, skipped, invalid } = expectedOutcome(fixture, adapter)
  return {
    calls: withIdentityFirst(calls),
    logIncludes: [
      ...(skipped.includes('missing-user-id') ? ['no User ID'] : []),
      ...(skipped.includes('no-consent') ? ['no consent for'] : []),
      ...invalid.map((i) => `"${i.field}"`)
    ]
  }
}

/**
 * The web-SDK calls a fresh page makes for expected calls: a track whose User ID is not the user the SDK was given
 * last is preceded by `logUser(userId)` (without traits), as both browser adapters do.
 */
export function withIdentityFirst(calls: readonly ExpectedCall[]): unknown[] {
  let current: string | undefined
  return calls.flatMap((c): unknown[] => {
    const [method, first] = c.sdk
    if (method === 'logUser') {
      current = String(first)
      return [c.sdk]
    }
    const userId = 'body' in c.http ? (c.http.body as { user_id?: unknown }).user_id : undefined
    if (typeof userId !== 'string' || userId === current) return [c.sdk]
    current = userId
    return [['logUser', userId, undefined], c.sdk]
  })
}

/** What the test pages put on `window.harness` (each adapter's page adds its own `start`). */
export interface PageHarnessApi {
  send(id: number, eventJson: string): Promise<void>
  fire(id: number, eventJson: string): void
  state(id: number): unknown
  reset(): void
  /** Analytics.js's own API, called as a site does: identify, track, reset. */
  call(id: number, method: 'identify' | 'track' | 'reset', args: unknown[]): Promise<void>
}

/** Node-side calls into a test page's harness: send (waits), fire (does not wait), state. */
export function harnessCalls<H extends PageHarnessApi>() {
  type W = { harness: H }
  return {
    send: (p: OpenedPage, id: number, event: unknown) =>
      p.page.evaluate(([i, e]) => (window as unknown as W).harness.send(i, e), [id, JSON.stringify(event)] as const),
    fire: (p: OpenedPage, id: number, event: unknown) =>
      p.page.evaluate(([i, e]) => (window as unknown as W).harness.fire(i, e), [id, JSON.stringify(event)] as const),
    state: (p: OpenedPage, id: number) =>
      p.page.evaluate((i) => (window as unknown as W).harness.state(i) as ReturnType<H['state']>, id),
    reset: (p: OpenedPage) => p.page.evaluate(() => (window as unknown as W).harness.reset()),
    call: (p: OpenedPage, id: number, method: 'identify' | 'track' | 'reset', ...args: unknown[]) =>
      p.page.evaluate(([i, m, a]) => (window as unknown as W).harness.call(i, m, a), [id, method, args] as const)
  }
}

/**
 * What a failed SDK load left behind, for both browser adapters: sends one more track, then watches the page for
 * a second — the timer callbacks that ran meanwhile (ours should be none), what the plain destination got last
 * (the new track, at once) and the SDK calls (none).
 */
export async function afterFailedLoad(
  p: OpenedPage,
  id: number
): Promise<{ timerFires: number; lastPlain: string | undefined; calls: unknown[] }> {
  const { send, state } = harnessCalls<PageHarnessApi & { state(id: number): ReturnType<typeof recordedState> }>()
  await send(p, id, { type: 'track', event: 'After', userId: 'u' })
  const before = (await state(p, id)).timerFires
  await p.page.waitForTimeout(1000)
  const after = await state(p, id)
  return { timerFires: after.timerFires - before, lastPlain: after.plain.at(-1), calls: after.calls }
}

/** Opens a page, runs `body`, always closes it. */
export async function withOpenPage<T>(
  browser: Browser,
  server: PageServer,
  sdk: SdkServing,
  body: (p: OpenedPage) => Promise<T>
): Promise<T> {
  const p = await openPage(browser, server, sdk)
  try {
    return await body(p)
  } finally {
    await p.close()
  }
}

/**
 * The ordering scenario both browser adapters run: 10 events (an identify every third, tracks of that user between), how
 * a plain destination records them, and the SDK calls 1Flow must see, in send order. No messageIds:
 * Analytics.js assigns them, as it does for real events.
 */
export const ORDERING_EVENTS = Array.from({ length: 10 }, (_, i) =>
  i % 3 === 0
    ? { type: 'identify', userId: `u${i}`, traits: { n: i } }
    : { type: 'track', userId: `u${i - (i % 3)}`, event: `E${i}`, properties: { n: i } }
)
export const ORDERING_LABELS = ORDERING_EVENTS.map((e) => `${e.type}:${'event' in e ? e.event : e.userId}`)
export const ORDERING_CALLS = ORDERING_EVENTS.map((e) =>
  e.type === 'identify' ? ['logUser', e.userId, e.traits] : ['logEvent', e.event, e.properties]
)

/** A page function for `waitForFunction`: true once the recording SDK has at least `n` calls. */
export const sdkHasCalls = (n: number): boolean =>
  ((window as unknown as { __oneflowRecorder?: { calls: unknown[] } }).__oneflowRecorder?.calls.length ?? 0) >= n

/** Bundles a test page, serves it on 127.0.0.1 and launches Chromium: what each browser test file starts with. */
export async function startTestPage(
  pageEntry: string
): Promise<{ browser: Browser; server: PageServer; close(): Promise<void> }> {
  const server = await PageServer.start(await bundlePage(pageEntry))
  const browser = await launchChromium().catch(async (error: unknown) => {
    await server.close()
    throw error
  })
  return {
    browser,
    server,
    close: async () => {
      await browser.close()
      await server.close()
    }
  }
}
