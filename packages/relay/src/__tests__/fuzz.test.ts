/**
 * 2,000+ hostile requests (bad JSON, deep nesting, huge strings, wrong types, prototype-pollution keys, bad
 * auth) against a running relay over HTTP: never a 5xx, never a crash, never a polluted prototype.
 */
import fc from 'fast-check'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { startRelay, WRITE_KEY, type TestRelay } from './helpers'

let fake: FakeOneFlowApi
let relay: TestRelay
beforeAll(async () => {
  fake = await FakeOneFlowApi.start()
  relay = await startRelay(fake)
})
afterAll(async () => {
  await relay.stop()
  await fake.close()
})

const basic = (key: string) => `Basic ${Buffer.from(`${key}:`).toString('base64')}`
const auth = fc.oneof(
  fc.constant(basic(WRITE_KEY)),
  fc.constant(undefined),
  fc.string().map(basic),
  fc.string().map((s) => `Basic ${s}`),
  fc.constant('Bearer x'),
  fc.constant('Basic ===='),
  fc.string()
)
const path = fc.constantFrom(
  '/v1/track',
  '/v1/identify',
  '/v1/page',
  '/v1/screen',
  '/v1/group',
  '/v1/alias',
  '/v1/batch',
  '/v1/import',
  '/v1/nope',
  '/v1/',
  '/health/ready'
)
const hostileKey = fc.constantFrom(
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  'type',
  'event',
  'userId',
  'writeKey',
  'batch',
  'messageId'
)
const scalar = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.string({ minLength: 1000, maxLength: 40_000 })
)
const hostileObject: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, scalar, fc.array(tie('value'), { maxLength: 4 }), tie('object')),
  object: fc.dictionary(fc.oneof(hostileKey, fc.string()), tie('value'), { maxKeys: 6 })
})).value
const deep = fc.integer({ min: 100, max: 20_000 }).map((n) => '['.repeat(n) + ']'.repeat(n))
const deepObject = fc
  .integer({ min: 50, max: 5_000 })
  .map((n) => `{"type":"track","userId":"u","event":"E","properties":${'{"a":'.repeat(n)}1${'}'.repeat(n)}}`)
const body = fc.oneof(
  hostileObject.map((v) => JSON.stringify(v) ?? 'null'),
  fc.record({ batch: fc.array(hostileObject, { maxLength: 30 }) }).map((v) => JSON.stringify(v)),
  fc
    .record({
      type: fc.constantFrom('track', 'identify', 'page'),
      userId: scalar,
      anonymousId: scalar,
      event: scalar,
      properties: hostileObject,
      traits: hostileObject
    })
    .map((v) => JSON.stringify(v)),
  fc.string(),
  fc.string({ minLength: 100_000, maxLength: 700_000 }),
  deep,
  deepObject,
  fc.constant('{"__proto__":{"polluted":true},"userId":"u","event":"E"}'),
  fc.constant('{"batch":[{"type":"track","userId":"u","event":"E","constructor":{"prototype":{"polluted":true}}}]}')
)
const contentType = fc.constantFrom(
  'application/json',
  'text/plain',
  'application/x-www-form-urlencoded',
  '',
  'application/json; charset=utf-8'
)

it('survives 2,000 hostile requests without a 5xx or a crash', async () => {
  const statuses = new Map<number, number>()
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ path, auth, body, contentType }), { minLength: 8, maxLength: 8 }),
      async (requests) => {
        await Promise.all(
          requests.map(async (r) => {
            const headers: Record<string, string> = {}
            if (r.auth !== undefined) headers.authorization = r.auth
            if (r.contentType) headers['content-type'] = r.contentType
            const res = await fetch(`${relay.url}${r.path}`, { method: 'POST', headers, body: r.body })
            await res.arrayBuffer()
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
            expect(res.status, `${r.path} ${r.body.slice(0, 80)}`).toBeLessThan(500)
          })
        )
      }
    ),
    { numRuns: 260 }
  )
  const total = [...statuses.values()].reduce((a, b) => a + b, 0)
  expect(total).toBeGreaterThanOrEqual(2000)
  expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  expect((await fetch(`${relay.url}/health/live`)).status).toBe(200)
  expect((await fetch(`${relay.url}/health/ready`)).status).toBe(200)
  // Both sides of the contract were exercised.
  expect(statuses.get(200)).toBeGreaterThan(0)
  expect(statuses.get(400)).toBeGreaterThan(0)
  expect(statuses.get(401)).toBeGreaterThan(0)
}, 120_000)
