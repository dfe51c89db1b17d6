// A sample that breaks every purity rule; the lint test expects each line below to be reported.
import { readFileSync } from 'node:fs'
import { EventEmitter } from 'events'
import { transform } from '@segment/actions-core/mapping-kit'

export function impure(): unknown {
  const el = document.createElement('script')
  const href = window.location.href
  const env = process.env.HOME
  const t = setTimeout(() => undefined, 1)
  return [el, href, env, t, readFileSync, EventEmitter, transform, globalThis]
}
