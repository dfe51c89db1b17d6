// Bench page: the Analytics.js plugin with a no-op 1Flow SDK, timing track() through the plugin itself.
import { Context } from '@segment/analytics-next'
import { oneFlow } from '@oneflow-seg/ajs-plugin'

;(window as { _1flow?: unknown })._1flow = { logUser() {}, logEvent() {} }

async function run(batches: number, perBatch: number): Promise<number[]> {
  const plugin = oneFlow({ projectApiKey: 'bench-key' })
  await plugin.load(Context.system(), {} as never)
  const perCall: number[] = []
  for (let b = 0; b < batches; b++) {
    const contexts = Array.from(
      { length: perBatch },
      (_, i) =>
        new Context({
          type: 'track',
          event: `Event ${i % 10}`,
          userId: `user-${i}`,
          anonymousId: 'anon-1',
          messageId: `m-${b}-${i}`,
          timestamp: new Date(),
          properties: { plan: 'pro', value: i, items: [{ sku: 'a', qty: 1 }] }
        } as never)
    )
    const track = plugin.track as (ctx: Context) => Context | Promise<Context>
    const started = performance.now()
    for (const ctx of contexts) await track(ctx)
    perCall.push(((performance.now() - started) * 1000) / perBatch)
  }
  return perCall
}

;(window as unknown as { harness: { run: typeof run } }).harness = { run }
