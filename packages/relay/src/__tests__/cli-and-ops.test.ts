/** The `oneflow-relay` CLI as users run it: check-config, start/SIGTERM, dlq, stats; and what it logs. */
import { spawnSync } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { dirname, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeOneFlowApi } from '@oneflow-seg/testkit'
import { acceptRequest } from '../ingest'
import { parseConfig, projectIdOf } from '../config'
import { SqliteQueue } from '../queue/sqlite-queue'
import { post, tempDir, until } from './helpers'
import { CLI, freePort, runCli, startRelayProcess, writeConfig } from './process'

const WRITE_KEY = 'wk_live_SECRET_write_key_42'
const PROJECT_KEY = 'pk_live_SECRET_project_key_42'
const REFUSED_KEY = 'pk_live_SECRET_refused_key_7'

let fake: FakeOneFlowApi
beforeAll(async () => {
  fake = await FakeOneFlowApi.start({ apiKeys: [PROJECT_KEY] })
})
afterAll(() => fake.close())

describe('check-config', () => {
  it('explains a valid config', () => {
    const file = writeConfig({ sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }] })
    const r = runCli(['check-config', '--config', file])
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('is valid')
    expect(r.stdout).toContain('source web: project')
    expect(r.stdout).toContain('the presets')
    expect(r.stdout + r.stderr).not.toContain('SECRET')
  })

  it('names every bad key, and never prints a secret', () => {
    const file = writeConfig({
      listen: { port: 99999 },
      oneflow: { mode: 'fast', maxRequestsPerSecond: 900 },
      queue: 'redis://x',
      sources: [
        {
          writeKey: WRITE_KEY,
          projectApiKey: 'env:ONEFLOW_KEY_THAT_IS_NOT_SET',
          mappings: [{ subscribe: 'type == "track"', partnerAction: 'trackEvent' }]
        },
        { writeKey: WRITE_KEY }
      ],
      extra: true
    })
    const r = runCli(['check-config', '--config', file])
    expect(r.status).toBe(1)
    for (const key of [
      'extra',
      'listen.port',
      'queue',
      'oneflow.mode',
      'oneflow.maxRequestsPerSecond',
      'sources[0].projectApiKey',
      'sources[0].mappings[0]',
      'sources[1].writeKey',
      'sources[1].projectApiKey'
    ]) {
      expect(r.stderr).toContain(`- ${key}:`)
    }
    expect(r.stderr).toContain('ONEFLOW_KEY_THAT_IS_NOT_SET')
    expect(r.stderr).toContain('Write instead: type = "track"')
    expect(r.stderr).not.toContain('SECRET')
  })

  it('refuses unknown keys in every section, so a typo never goes unnoticed', () => {
    const file = writeConfig({
      listen: { host: '127.0.0.1', prot: 8787 },
      oneflow: { apiBaseUrl: 'https://api.1flow.app/v1', concurency: 4 },
      limits: { diskCapByte: 5_000_000, deadLetterRetentionDays: 0 },
      statusPage: { enable: true },
      sources: [{ writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY, segmant: {} }]
    })
    const r = runCli(['check-config', '--config', file])
    expect(r.status).toBe(1)
    for (const key of [
      'listen.prot',
      'oneflow.concurency',
      'limits.diskCapByte',
      'limits.deadLetterRetentionDays',
      'statusPage.enable',
      'sources[0].segmant'
    ])
      expect(r.stderr).toContain(`- ${key}:`)
    expect(r.stderr).toMatch(/limits\.diskCapByte: unknown key; expected diskCapBytes, .*requestTimeoutMs/)
  })

  it('takes the queue from the environment (env:NAME) and never prints a PostgreSQL password', () => {
    const url = 'postgres://relay:s3cret-Pa55@db.internal:5432/oneflow_relay'
    for (const [queue, env] of [
      [url, {}],
      ['env:RELAY_QUEUE_URL', { RELAY_QUEUE_URL: url }]
    ] as const) {
      const file = writeConfig({ queue, sources: [{ writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }] })
      const r = runCli(['check-config', '--config', file], env)
      expect(r.status).toBe(0)
      expect(r.stdout).toContain('queue:  postgres://relay:***@db.internal:5432/oneflow_relay')
      expect(r.stdout + r.stderr).not.toContain('s3cret')
    }
    const missing = runCli([
      'check-config',
      '--config',
      writeConfig({ queue: 'env:RELAY_QUEUE_NOT_SET', sources: [{ writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }] })
    ])
    expect(missing.stderr).toContain('- queue: reads the environment variable RELAY_QUEUE_NOT_SET, which is not set')
  })

  it('reads secrets from the environment with env:NAME', () => {
    const file = writeConfig({ sources: [{ writeKey: 'env:RELAY_WK', projectApiKey: 'env:RELAY_PK' }] })
    expect(runCli(['check-config', '--config', file], { RELAY_WK: WRITE_KEY, RELAY_PK: PROJECT_KEY }).status).toBe(0)
  })

  it('says clearly when the file is missing or not JSON', () => {
    expect(runCli(['check-config', '--config', '/nonexistent/relay.json']).stderr).toContain(
      'cannot read /nonexistent/relay.json'
    )
    const dir = tempDir()
    const file = join(dir, 'bad.json')
    writeFileSync(file, '{ not json')
    expect(runCli(['check-config', '--config', file]).stderr).toMatch(/is not valid JSON/)
  })
})

describe('start, SIGTERM and the logs', () => {
  it('stops accepting on SIGTERM, finishes the delivery in flight, exits in time, loses nothing — and never logs a secret', async () => {
    const port = await freePort()
    const dir = tempDir()
    const file = writeConfig(
      {
        listen: { host: '127.0.0.1', port },
        queue: 'sqlite:./relay.db',
        oneflow: { apiBaseUrl: fake.url },
        sources: [
          { name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY },
          { name: 'refused', writeKey: 'wk_other_SECRET_9', projectApiKey: REFUSED_KEY }
        ]
      },
      dir
    )
    fake.reset()
    const relay = await startRelayProcess(file, port)
    // A refused project key (alert path), an unknown write key, then real traffic.
    await post(relay.url, '/v1/track', { event: 'E', userId: 'u' }, 'wk_other_SECRET_9')
    expect((await post(relay.url, '/v1/track', { event: 'E', userId: 'u' }, 'wk_unknown_SECRET_3')).status).toBe(401)
    await until(() => fake.requests.some((r) => r.status === 401), 'the 401 from 1Flow')
    fake.setLatency(2_000)
    const sent = Array.from({ length: 20 }, (_, i) => ({
      type: 'track',
      event: `E${i}`,
      userId: `u${i}`,
      messageId: `m${i}`
    }))
    expect((await post(relay.url, '/v1/batch', { batch: sent }, WRITE_KEY)).status).toBe(200)
    await until(() => fake.inFlight > 0, 'a delivery in flight')
    const signalled = Date.now()
    relay.child.kill('SIGTERM')
    await until(
      async () =>
        (await fetch(`${relay.url}/health/ready`).then(
          (r) => r.status,
          () => 0
        )) !== 200,
      'readiness to drop'
    )
    expect(await relay.exited).toBe(0)
    expect(Date.now() - signalled).toBeLessThan(25_000)
    fake.setLatency(0)
    const deliveredBeforeExit = fake.accepted.filter((m) => m.apiKey === PROJECT_KEY).length
    expect(deliveredBeforeExit).toBeGreaterThan(0)
    // Whatever was not delivered is still queued: a restart delivers the rest.
    const again = await startRelayProcess(file, port)
    await until(
      () => new Set(fake.accepted.filter((m) => m.apiKey === PROJECT_KEY).map((m) => m.body.event)).size === 20,
      'all 20 events after the restart'
    )
    again.child.kill('SIGTERM')
    await again.exited
    const logs = relay.output() + again.output()
    expect(logs).toContain('oneflow-relay listening')
    expect(logs).toContain('ALERT')
    for (const secret of [
      WRITE_KEY,
      PROJECT_KEY,
      REFUSED_KEY,
      'wk_other_SECRET_9',
      'wk_unknown_SECRET_3',
      Buffer.from(`${WRITE_KEY}:`).toString('base64')
    ]) {
      expect(logs).not.toContain(secret)
    }
    expect(logs).not.toContain('SECRET')
  }, 60_000)
})

/** A config and its SQLite queue holding `n` tracks (m1…, users u1…) leased on lane "p", ready to dead-letter. */
async function leasedEvents(n: number, now: number) {
  const dir = tempDir()
  const file = writeConfig(
    { queue: 'sqlite:./relay.db', sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }] },
    dir
  )
  const queue = new SqliteQueue(join(dir, 'relay.db'))
  await queue.enqueue(
    Array.from({ length: n }, (_, i) => ({
      messageId: `m${i + 1}`,
      sourceName: 'web',
      projectId: projectIdOf(PROJECT_KEY),
      userKey: `u${i + 1}`,
      body: JSON.stringify({ type: 'track', event: `E${i + 1}`, userId: `u${i + 1}` }),
      receivedAt: now
    }))
  )
  return { dir, file, queue, jobs: await queue.lease(projectIdOf(PROJECT_KEY), 10, 60_000, now) }
}

describe('dlq and stats', () => {
  it('lists, replays and purges dead letters; reports stats', async () => {
    const { file, queue, jobs } = await leasedEvents(3, Date.now())
    await queue.deadLetter(
      jobs.map((j) => j.id),
      { reason: '1Flow answered 400', status: 400, response: '{"error":"bad"}', sent: true },
      Date.now()
    )
    await queue.close()

    const list = runCli(['dlq', 'list', '--config', file])
    const rows = list.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: number; messageId: string; status: number; reason: string; attempts: number })
    expect(rows.map((r) => [r.messageId, r.status, r.reason, r.attempts])).toEqual([
      ['m1', 400, '1Flow answered 400', 1],
      ['m2', 400, '1Flow answered 400', 1],
      ['m3', 400, '1Flow answered 400', 1]
    ])
    // Every time in one format: ISO-8601.
    const iso = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/
    for (const row of rows as unknown as Array<Record<string, string>>)
      for (const key of ['receivedAt', 'firstAttemptAt', 'deadAt']) expect(row[key], key).toMatch(iso)
    expect(JSON.parse(runCli(['dlq', 'list', '--config', file, '--body', '--limit', '1']).stdout).event).toEqual({
      type: 'track',
      event: 'E1',
      userId: 'u1'
    })
    expect(runCli(['dlq', 'replay', '--config', file, '--id', String(rows[0]!.id)]).stdout).toContain(
      'Replaying 1 dead letter(s)'
    )
    expect(runCli(['dlq', 'purge', '--config', file, '--id', String(rows[1]!.id)]).stdout).toContain(
      'Purged 1 dead letter(s)'
    )
    expect(runCli(['dlq', 'purge', '--config', file]).stderr).toContain('--id <n> (repeatable) or --all')
    const stats = JSON.parse(runCli(['stats', '--config', file]).stdout) as Record<string, unknown>
    expect(stats).toMatchObject({
      pending: 1,
      dead: 1,
      leased: 0,
      deadLetters: { count: 1, bytes: expect.any(Number), oldestAgeMs: expect.any(Number) }
    })
    expect((stats.deadLetters as { bytes: number }).bytes).toBeGreaterThan(20)
    // Lanes by the name /health and the metrics give them; without the project key in the shell, by id.
    expect(stats.lanes).toEqual({ web: 1 })
    const anonymous = writeConfig(
      { queue: 'sqlite:./relay.db', sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: 'env:NOT_SET_PK' }] },
      dirname(file)
    )
    expect(JSON.parse(runCli(['stats', '--config', anonymous]).stdout).lanes).toEqual({
      [`lane ${projectIdOf(PROJECT_KEY)}`]: 1
    })
  })

  it('reads the queue without any credential in the environment, and refuses a --limit that is not a whole number', async () => {
    const dir = tempDir()
    // The config a deployment uses: every credential from the environment, none of which an operator's shell has.
    const file = writeConfig(
      {
        queue: 'sqlite:./relay.db',
        sources: [
          {
            name: 'web',
            writeKey: 'env:RELAY_WK',
            projectApiKey: 'env:RELAY_PK',
            webhookToken: 'env:RELAY_HOOK',
            segment: { writeKey: 'env:RELAY_SEGMENT_WK' }
          }
        ]
      },
      dir
    )
    expect(runCli(['check-config', '--config', file]).stderr).toContain('RELAY_WK, which is not set')
    // No queue yet: said as such, never a new empty one reported as "no dead letters".
    expect(runCli(['stats', '--config', file]).stderr).toContain('There is no queue at')
    await new SqliteQueue(join(dir, 'relay.db')).close()
    const stats = runCli(['stats', '--config', file])
    expect(stats.status).toBe(0)
    expect(JSON.parse(stats.stdout)).toMatchObject({ pending: 0, dead: 0 })
    const list = runCli(['dlq', 'list', '--config', file])
    expect([list.status, list.stderr.trim()]).toEqual([0, 'No dead letters.'])
    for (const bad of ['abc', '0', '1.5', '-3']) {
      const refused = runCli(['dlq', 'list', '--config', file, '--limit', bad])
      expect(refused.status).toBe(1)
      expect(refused.stderr).toContain('--limit takes a whole number from 1 to 100,000')
      expect(refused.stderr).not.toMatch(/datatype mismatch/)
    }
    // The queue's own setting is still required: an admin command reads nothing else.
    const noQueue = writeConfig(
      { queue: 'env:RELAY_QUEUE', sources: [{ writeKey: 'env:RELAY_WK', projectApiKey: 'pk' }] },
      dir
    )
    expect(runCli(['stats', '--config', noQueue]).stderr).toContain('queue: reads the environment variable RELAY_QUEUE')
  })

  it('replay checks each dead letter as ingest would: an event ingest refused stays dead unless --force', async () => {
    const dir = tempDir()
    const file = writeConfig(
      { queue: 'sqlite:./relay.db', sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }] },
      dir
    )
    const queue = new SqliteQueue(join(dir, 'relay.db'))
    // What ingest stores for a /v1/track without a user: rejected at ingest, kept as a dead letter.
    const accepted = acceptRequest(
      'track',
      { event: 'No identity' },
      `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`,
      new Map(
        parseConfig({ sources: [{ name: 'web', writeKey: WRITE_KEY, projectApiKey: PROJECT_KEY }] }).sources.map(
          (s) => [s.writeKey, s]
        )
      ),
      Date.now(),
      () => 'mid-1'
    )
    if (!('deadLetters' in accepted)) throw new Error('expected an accepted request')
    await queue.enqueue(accepted.deadLetters)
    await queue.close()
    const [dead] = runCli(['dlq', 'list', '--config', file, '--body'])
      .stdout.trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: number; event: Record<string, unknown> })
    expect(dead!.event).toEqual({ event: 'No identity', type: 'track' })
    const refused = runCli(['dlq', 'replay', '--config', file, '--all'])
    expect(refused.status).toBe(1)
    expect(refused.stdout).toContain('Replaying 0 dead letter(s)')
    expect(refused.stderr).toContain(
      `- id ${dead!.id} (missing_identity): the event has neither userId nor anonymousId; send at least one`
    )
    expect(refused.stderr).toContain('--force')
    const forced = runCli(['dlq', 'replay', '--config', file, '--all', '--force'])
    expect(forced.status).toBe(0)
    expect(forced.stdout).toContain('Replaying 1 dead letter(s)')
  })
})

describe('preview and what check-config says a source sends', () => {
  const config = () =>
    writeConfig(
      {
        queue: 'sqlite:./relay.db',
        sources: [
          { name: 'web', writeKey: 'env:RELAY_WK', projectApiKey: 'env:RELAY_PK' },
          {
            name: 'signups',
            writeKey: 'env:RELAY_WK2',
            projectApiKey: 'env:RELAY_PK2',
            consentCategories: ['Analytics'],
            mappings: [
              { name: 'Sign-ups', subscribe: 'type = "track" and event = "Signed Up"', partnerAction: 'trackEvent' }
            ]
          }
        ]
      },
      tempDir()
    )

  it('prints, per event, the HTTP body and the web SDK call 1Flow would get, or why not; no credential needed', () => {
    const file = config()
    const input = join(tempDir(), 'events.ndjson')
    writeFileSync(
      input,
      [
        { type: 'identify', userId: 'u1', traits: { plan: 'pro', nothing: null } },
        { type: 'track', event: 'Signed Up', userId: 'u1', anonymousId: 'a1', properties: { plan: 'pro' } },
        { type: 'page', name: 'Pricing', userId: 'u1' },
        { type: 'track', event: 'No One' }
      ]
        .map((e) => JSON.stringify(e))
        .join('\n')
    )
    const r = runCli(['preview', '--config', file, input])
    expect(r.status).toBe(0)
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(lines[0]).toMatchObject({
      source: 'web',
      sent: [
        {
          http: { path: '/identify', body: { user_id: 'u1', traits: { plan: 'pro' } } },
          sdk: ['logUser', 'u1', { plan: 'pro' }]
        }
      ]
    })
    expect(lines[1]).toMatchObject({
      sent: [
        {
          http: {
            path: '/track',
            body: { event: 'Signed Up', user_id: 'u1', anonymous_id: 'a1', properties: { plan: 'pro' } }
          },
          sdk: ['logEvent', 'Signed Up', { plan: 'pro' }]
        }
      ]
    })
    expect(lines[2]).toMatchObject({ sent: [], skipped: [{ reason: 'not-subscribed' }] })
    expect(lines[3]).toMatchObject({ sent: [], rejected: { code: 'missing_identity' } })
    expect(r.stderr).toContain('4 event(s) for source web: 2 sent, 2 not sent.')
    expect(r.stdout).not.toContain('api_key')
  })

  it('uses the named source: its mappings and consent categories; reads a batch body from standard input', () => {
    const file = config()
    const body = JSON.stringify({
      batch: [
        {
          type: 'track',
          event: 'Signed Up',
          userId: 'u1',
          context: { consent: { categoryPreferences: { Analytics: false } } }
        },
        {
          type: 'track',
          event: 'Signed Up',
          userId: 'u1',
          context: { consent: { categoryPreferences: { Analytics: true } } }
        },
        { type: 'identify', userId: 'u1' }
      ]
    })
    const r = spawnSync(process.execPath, [CLI, 'preview', '--config', file, '--source', 'signups'], {
      input: body,
      encoding: 'utf8'
    })
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { sent: unknown[]; skipped: Array<{ reason: string }> })
    expect(lines.map((l) => [l.sent.length, l.skipped.map((s) => s.reason)])).toEqual([
      [0, ['no-consent']],
      [1, []],
      [0, ['not-subscribed']]
    ])
    expect(runCli(['preview', '--config', file, '--source', 'nope', input404()]).stderr).toContain(
      'No source named "nope"'
    )
  })

  it('says which input it cannot read', () => {
    const file = config()
    const bad = join(tempDir(), 'bad.ndjson')
    writeFileSync(bad, '{"type":"track","event":"A","userId":"u"}\nnot json\n')
    const r = runCli(['preview', '--config', file, bad])
    expect([r.status, r.stderr.trim()]).toEqual([
      1,
      'Could not read the events: the input is not JSON: an unexpected character at line 2, column 1 (give one JSON event, a {"batch": […]} body, or one event per line)'
    ])
  })

  it('an event nested too deep to read is rejected, and the events after it are still previewed', () => {
    const file = config()
    // Written out by hand: the test's own JSON.stringify would run out of stack first.
    const deep = `${'{"d":'.repeat(5_000)}1${'}'.repeat(5_000)}`
    const input = join(tempDir(), 'deep.json')
    writeFileSync(
      input,
      `[{"type":"track","event":"Deep","userId":"u1","properties":${deep}},{"type":"identify","userId":"u2"}]`
    )
    const r = runCli(['preview', '--config', file, input])
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { rejected?: { code: string }; sent: unknown[] })
    expect(lines.map((l) => [l.rejected?.code ?? null, l.sent.length])).toEqual([
      ['too_deep', 0],
      [null, 1]
    ])
  })

  it('check-config claims nothing a mapping does not do: "!=" is not a subscription, an invalid mapping is said', () => {
    const file = writeConfig(
      {
        queue: 'sqlite:./relay.db',
        sources: [
          {
            writeKey: 'w',
            projectApiKey: 'p',
            mappings: [
              {
                name: 'Not identify',
                subscribe: 'type != "identify" and type != "page" and type != "screen"',
                partnerAction: 'trackEvent'
              },
              { name: 'Pages as tracks', subscribe: 'type = "page"', partnerAction: 'trackEvent' }
            ]
          }
        ]
      },
      tempDir()
    )
    const out = runCli(['check-config', '--config', file]).stdout
    expect(out).toMatch(/page \(invalid, dead-lettered: [^)]*event_name/)
    expect(out).not.toContain('identify → ')
    expect(out).toContain('warning: identify is not sent')
  })

  it('check-config lists, per source, the event types sent and skipped, and warns when identify is not sent', () => {
    const r = runCli(['check-config', '--config', config()], {
      RELAY_WK: 'w1',
      RELAY_PK: 'p1',
      RELAY_WK2: 'w2',
      RELAY_PK2: 'p2'
    })
    expect(r.status).toBe(0)
    const [web, signups] = r.stdout.split('  source ').slice(1) as [string, string]
    expect(web).toContain('sent: track → /track (Track Event); identify → /identify (Identify User)')
    expect(web).toContain(
      'skipped: page (not-subscribed), screen (not-subscribed), group (not-subscribed), alias (not-subscribed)'
    )
    expect(web).not.toContain('warning')
    expect(signups).toContain('sent: track → when it matches "Sign-ups"')
    expect(signups).toContain('warning: identify is not sent, so 1Flow never learns who your users are')
  })
})

/** A path that does not exist (the source check comes first). */
function input404(): string {
  return join(tempDir(), 'missing.ndjson')
}

describe('import', () => {
  const KEYS = { RELAY_WK: 'wk_import', RELAY_PK: 'pk_import' }
  const history = (n: number, from = 0) =>
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({
        type: 'track',
        event: 'Old Event',
        userId: `u${(from + i) % 7}`,
        messageId: `hist-${from + i}`,
        timestamp: new Date(Date.UTC(2025, 0, 1) + (from + i) * 60_000).toISOString(),
        properties: { i: from + i }
      })
    )
  const setup = () => {
    const dir = tempDir()
    const file = writeConfig(
      {
        queue: 'sqlite:./relay.db',
        sources: [{ name: 'web', writeKey: 'env:RELAY_WK', projectApiKey: 'env:RELAY_PK' }]
      },
      dir
    )
    return { dir, file, db: join(dir, 'relay.db') }
  }

  it('queues a gzipped export with its own timestamps, dead-letters what ingest refuses, and skips what is already queued', async () => {
    const { dir, file, db } = setup()
    const input = join(dir, 'export.ndjson.gz')
    writeFileSync(
      input,
      gzipSync([...history(2_500), 'not json', JSON.stringify({ type: 'track', event: 'No One' })].join('\n'))
    )
    const r = runCli(['import', '--config', file, input], KEYS)
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('2500 queued, 0 already queued (same messageId), 2 rejected as dead letters (2502 lines')
    expect(runCli(['import', '--config', file, input], KEYS).stdout).toContain('0 queued, 2500 already queued')
    const queue = new SqliteQueue(db)
    try {
      // The lane is the source's project (its id is derived from the key, here a stand-in: none was set).
      const [lane] = Object.keys((await queue.stats(Date.now())).lanes)
      const jobs = await queue.lease(lane as string, 3, 60_000, Date.now())
      expect(jobs.map((j) => JSON.parse(j.body).timestamp)).toEqual([
        '2025-01-01T00:00:00.000Z',
        '2025-01-01T00:01:00.000Z',
        '2025-01-01T00:02:00.000Z'
      ])
      const dead = await queue.listDead()
      expect(dead.map((d) => d.reason.split(':')[0])).toEqual([
        'rejected at ingest (invalid_type)',
        'rejected at ingest (missing_identity)',
        'rejected at ingest (invalid_type)',
        'rejected at ingest (missing_identity)'
      ])
    } finally {
      await queue.close()
    }
  })

  it('resumes an interrupted import where it stopped, and refuses to start over by accident', () => {
    const { dir, file } = setup()
    const input = join(dir, 'export.ndjson')
    writeFileSync(input, history(3_000).join('\n'))
    // A run that stopped after its first committed chunk (what the state file says after a kill).
    writeFileSync(
      `${input}.import-state.json`,
      JSON.stringify({ lines: 1_000, queued: 1_000, duplicates: 0, rejected: 0, skipped: 0 })
    )
    const again = runCli(['import', '--config', file, input], KEYS)
    expect([again.status, again.stderr]).toEqual([1, expect.stringContaining('run again with --resume to continue')])
    const resumed = runCli(['import', '--config', file, '--resume', input], KEYS)
    expect(resumed.stdout).toContain('3000 queued')
    expect(existsSync(`${input}.import-state.json`)).toBe(false)
    const stats = JSON.parse(runCli(['stats', '--config', file]).stdout) as { pending: number }
    // Lines 1–1,000 were never queued here (the state said they were): only the 2,000 after them are.
    expect(stats.pending).toBe(2_000)
    expect(runCli(['import', '--config', file, '--resume', input], KEYS).stderr).toContain('nothing to resume')
  })

  it('needs the real project key (the lane is named after it), except for a dry run', () => {
    const { dir, file } = setup()
    const input = join(dir, 'export.ndjson')
    writeFileSync(input, history(3).join('\n'))
    expect(runCli(['import', '--config', file, input]).stderr).toContain('RELAY_PK, which is not set')
    expect(runCli(['import', '--config', file, '--dry-run', input]).stdout).toContain('3 would be sent to 1Flow')
  })

  it('--dry-run counts what would be sent, skipped by the mappings and rejected, and writes nothing', () => {
    const { dir, file } = setup()
    const input = join(dir, 'export.ndjson')
    writeFileSync(
      input,
      [...history(10), JSON.stringify({ type: 'page', name: 'Home', userId: 'u1' }), '{"type":"track"}'].join('\n')
    )
    const r = runCli(['import', '--config', file, '--dry-run', input])
    expect(r.stdout).toContain(
      '10 would be sent to 1Flow, 1 accepted but not sent by the mappings, 1 rejected (12 lines'
    )
    // A dry run writes nothing, not even the queue.
    expect(runCli(['stats', '--config', file]).stderr).toContain('There is no queue at')
  })

  it('keeps the time an exported event happened, even with sentAt and receivedAt from long ago', async () => {
    const { dir, file, db } = setup()
    const input = join(dir, 'export.ndjson')
    const old = {
      type: 'track',
      event: 'Signed Up',
      userId: 'u1',
      messageId: 'seg-1',
      timestamp: '2023-03-01T10:00:00.000Z',
      sentAt: '2023-03-01T10:00:02.000Z',
      receivedAt: '2023-03-01T10:00:02.100Z'
    }
    // A byte order mark before the first line, as some exports have.
    writeFileSync(input, `\uFEFF${JSON.stringify(old)}\n`)
    expect(runCli(['import', '--config', file, input], KEYS).stdout).toContain('1 queued')
    const queue = new SqliteQueue(db)
    try {
      const [lane] = Object.keys((await queue.stats(Date.now())).lanes)
      const [job] = await queue.lease(lane as string, 1, 60_000, Date.now())
      expect(JSON.parse(job!.body)).toMatchObject({ timestamp: old.timestamp, receivedAt: old.receivedAt })
      expect(await queue.listDead()).toEqual([])
    } finally {
      await queue.close()
    }
  })

  it('imports events without a messageId once, however often the file is imported', () => {
    const { dir, file } = setup()
    const input = join(dir, 'export.ndjson')
    writeFileSync(
      input,
      ['{"type":"track","event":"A","userId":"u1"}', '{"type":"track","event":"B","userId":"u1"}'].join('\n')
    )
    expect(runCli(['import', '--config', file, input], KEYS).stdout).toContain('2 queued, 0 already queued')
    expect(runCli(['import', '--config', file, input], KEYS).stdout).toContain('0 queued, 2 already queued')
  })

  it('says what is wrong with its input: a directory, --resume from standard input, a truncated gzip', () => {
    const { dir, file } = setup()
    expect(runCli(['import', '--config', file, dir], KEYS).stderr).toContain('not a file')
    expect(runCli(['import', '--config', file, '--resume', '-'], KEYS).stderr).toContain('--resume needs a file')
    const gz = join(dir, 'cut.ndjson.gz')
    const whole = gzipSync(history(5_000).join('\n'))
    writeFileSync(gz, whole.subarray(0, Math.floor(whole.length / 2)))
    const cut = runCli(['import', '--config', file, gz], KEYS)
    expect(cut.status).toBe(1)
    expect(cut.stderr).toMatch(/reading .*cut\.ndjson\.gz failed after line \d+ .*run again with --resume/)
  })
})

describe('dead letters: filters, export, dry-run replay', () => {
  it('filters by reason and date, exports events that import takes back, and a dry run changes nothing', async () => {
    const now = Date.now()
    const { file, queue, jobs } = await leasedEvents(4, now)
    await queue.deadLetter(
      jobs.slice(0, 2),
      { reason: '1Flow answered 400: bad event', status: 400, sent: true },
      now - 86_400_000
    )
    await queue.deadLetter(jobs.slice(2), { reason: 'gave up after 24 h of retries; last error: 503', sent: true }, now)
    await queue.close()

    const ids = (args: string[]) =>
      runCli(['dlq', 'list', '--config', file, ...args])
        .stdout.trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as { messageId: string }).messageId)
    expect(ids(['--reason', 'answered 400'])).toEqual(['m1', 'm2'])
    expect(ids(['--reason', 'GAVE UP'])).toEqual(['m3', 'm4'])
    expect(ids(['--since', new Date(now - 60_000).toISOString()])).toEqual(['m3', 'm4'])
    expect(ids(['--reason', '400', '--limit', '1'])).toEqual(['m1'])
    expect(runCli(['dlq', 'list', '--config', file, '--since', 'yesterday']).stderr).toContain('--since takes a date')

    const exported = runCli(['dlq', 'export', '--config', file, '--reason', 'gave up'])
    expect(exported.stderr).toContain('Exported 2 dead letter(s).')
    expect(
      exported.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { event: string }).event)
    ).toEqual(['E3', 'E4'])

    const dry = runCli(['dlq', 'replay', '--config', file, '--all', '--dry-run'])
    expect(dry.stdout).toContain('Dry run: would replay 4 dead letter(s).')
    expect((JSON.parse(runCli(['stats', '--config', file]).stdout) as { dead: number; pending: number }).dead).toBe(4)
  })
})
