import { describe, expect, it } from 'vitest'
import { followUser, userAtStart } from '../index'
import { recordingClient } from './recording-client'

/** An Analytics.js-shaped user store with a reset event, as analytics-next exposes them to plugins. */
function fakeAnalytics(id: string | null, traits: unknown = {}) {
  const listeners: Array<() => void> = []
  const user = { id: id as string | null, traits }
  return {
    user: () => ({ id: () => user.id, traits: () => user.traits }),
    on: (_event: 'reset', listener: () => void) => listeners.push(listener),
    identify(newId: string) {
      user.id = newId
    },
    reset() {
      user.id = null
      user.traits = {}
      for (const l of listeners) l()
    }
  }
}

describe('followUser', () => {
  it('gives the user known at start, with its stored traits, before any event, once', () => {
    const analytics = fakeAnalytics('known-1', { plan: 'pro' })
    const atStart = userAtStart(analytics)
    const { client, calls } = recordingClient()
    followUser(analytics, client, atStart)
    client.send({ kind: 'track', event: 'Viewed', properties: {}, userId: 'known-1' })
    expect(calls).toEqual([
      ['logUser', 'known-1', { plan: 'pro' }],
      ['logEvent', 'Viewed', {}]
    ])
  })

  it('gives nobody when nobody was known at start, or the user known then is gone by the time the SDK is ready', () => {
    const anonymous = fakeAnalytics(null)
    const first = recordingClient()
    followUser(anonymous, first.client, userAtStart(anonymous))
    expect(first.calls).toEqual([])

    const switched = fakeAnalytics('known-1')
    const atStart = userAtStart(switched)
    switched.identify('other-2') // identified while the SDK loaded: that identify gives its own user
    const second = recordingClient()
    followUser(switched, second.client, atStart)
    expect(second.calls).toEqual([])

    const loggedOut = fakeAnalytics('known-1')
    const before = userAtStart(loggedOut)
    loggedOut.reset()
    const third = recordingClient()
    followUser(loggedOut, third.client, before)
    expect(third.calls).toEqual([])
  })

  it('forgets the user given last on reset, so the same user is given again when identified again', () => {
    const analytics = fakeAnalytics('known-1')
    const { client, calls } = recordingClient()
    followUser(analytics, client, userAtStart(analytics))
    client.knownUser('known-1')
    analytics.reset()
    client.knownUser('known-1')
    expect(calls).toEqual([
      ['logUser', 'known-1'],
      ['logUser', 'known-1']
    ])
  })

  it('leaves out stored traits that are not plain data and still gives the user', () => {
    const circular: Record<string, unknown> = {}
    circular.self = circular
    const analytics = fakeAnalytics('known-1', circular)
    const { client, calls } = recordingClient()
    followUser(analytics, client, userAtStart(analytics))
    expect(calls).toEqual([['logUser', 'known-1']])
  })

  it('does nothing with something that is not an Analytics.js instance', () => {
    const { client, calls } = recordingClient()
    expect(userAtStart({})).toBeUndefined()
    followUser({}, client, ['x', {}])
    expect(calls).toEqual([])
  })
})
