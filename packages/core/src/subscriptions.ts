/**
 * `@oneflow-seg/core/subscriptions`: checks Segment-style subscriptions (mappings) without loading Segment's
 * mapping-kit or FQL parser. A sub-entry of its own so that browser bundles that do not need it never carry it.
 */
import { InvalidSubscriptionError, type SubscriptionProblem } from './subscription-errors.js'
import { lintFql, suggestFql } from './fql-lint.js'
import { actionKeys, actions, defaultMapping, isActionKey, type ActionKey } from './actions/registry.js'
import { MAX_SUBSCRIPTIONS, type Subscription, type ValidSubscription } from './subscription-shape.js'
import { cloudBatchingFields } from './actions/batching-fields.js'

function label(sub: Record<string, unknown>, index: number): string {
  return typeof sub.name === 'string' && sub.name !== ''
    ? `Mapping "${sub.name}" (#${index + 1})`
    : `Mapping #${index + 1}`
}

function checkOne(sub: unknown, index: number, problems: SubscriptionProblem[]): ValidSubscription | undefined {
  if (typeof sub !== 'object' || sub === null || Array.isArray(sub)) {
    problems.push({
      index,
      part: 'shape',
      message: `Mapping #${index + 1} must be an object {name, subscribe, partnerAction, mapping}.`
    })
    return undefined
  }
  const s = sub as Record<string, unknown>
  const where = label(s, index)
  const before = problems.length
  if (!isActionKey(s.partnerAction)) {
    problems.push({
      index,
      part: 'partnerAction',
      message: `${where}: partnerAction ${JSON.stringify(s.partnerAction ?? null)} is not a 1Flow action; use one of ${actionKeys.join(', ')}.`
    })
  }
  if (typeof s.subscribe !== 'string' || s.subscribe.trim() === '') {
    problems.push({
      index,
      part: 'subscribe',
      message: `${where}: "subscribe" must be an FQL trigger such as type = "track".`
    })
  } else {
    const found = lintFql(s.subscribe)
    if (found.length > 0) {
      const fixed = suggestFql(s.subscribe)
      const instead = fixed !== s.subscribe ? ` Write instead: ${fixed}` : ''
      for (const p of found) {
        problems.push({
          index,
          part: 'subscribe',
          message: `${where}: trigger ${JSON.stringify(s.subscribe)} at column ${p.column}: ${p.message}.${instead}`
        })
      }
    }
  }
  if (s.enabled !== undefined && typeof s.enabled !== 'boolean') {
    problems.push({ index, part: 'shape', message: `${where}: "enabled" must be true or false.` })
  }
  let mapping: Record<string, unknown> | undefined
  if (isActionKey(s.partnerAction)) {
    const fields = actions[s.partnerAction].fields as Record<string, { required?: unknown; label: string }>
    if (s.mapping === undefined) {
      mapping = defaultMapping(actions[s.partnerAction].fields)
    } else if (typeof s.mapping !== 'object' || s.mapping === null || Array.isArray(s.mapping)) {
      problems.push({
        index,
        part: 'mapping',
        message: `${where}: "mapping" must be an object of field → value or directive.`
      })
    } else {
      mapping = s.mapping as Record<string, unknown>
      for (const key of Object.keys(mapping)) {
        // Cloud mode's batching fields may ride along on any mapping (a mapping moves between modes unchanged);
        // the other modes ignore them.
        if (
          !Object.prototype.hasOwnProperty.call(fields, key) &&
          !Object.prototype.hasOwnProperty.call(cloudBatchingFields, key)
        ) {
          problems.push({
            index,
            part: 'mapping',
            message: `${where}: "${key}" is not a field of ${s.partnerAction}; its fields are ${Object.keys(fields).join(', ')}.`
          })
        }
      }
      for (const [key, field] of Object.entries(fields)) {
        if (field.required === true && mapping[key] === undefined) {
          problems.push({
            index,
            part: 'mapping',
            message: `${where}: required field "${key}" (${field.label}) is not mapped; map it, e.g. {"@path": "$.event"}.`
          })
        }
      }
    }
  }
  if (problems.length > before || mapping === undefined) return undefined
  return {
    name: typeof s.name === 'string' && s.name !== '' ? s.name : (s.partnerAction as string),
    subscribe: s.subscribe as string,
    partnerAction: s.partnerAction as ActionKey,
    mapping
  }
}

export { lintFql, suggestFql } from './fql-lint.js'
export type { FqlProblem } from './fql-lint.js'
export { MAX_SUBSCRIPTIONS } from './subscription-shape.js'
export type { Subscription, ValidSubscription } from './subscription-shape.js'

/**
 * Validates Segment-style subscriptions (at most 50; known actions; triggers FQL reads as written; mapping
 * keys that are real fields, required ones present). Returns the enabled ones, defaults filled in; throws
 * InvalidSubscriptionError listing every problem with what to write instead.
 */
export function validateSubscriptions(input: unknown): ValidSubscription[] {
  if (!Array.isArray(input)) {
    throw new InvalidSubscriptionError([
      { index: -1, part: 'list', message: 'Mappings must be an array of {name, subscribe, partnerAction, mapping}.' }
    ])
  }
  const problems: SubscriptionProblem[] = []
  if (input.length > MAX_SUBSCRIPTIONS) {
    problems.push({
      index: -1,
      part: 'list',
      message: `${input.length} mappings given; a 1Flow destination instance supports at most ${MAX_SUBSCRIPTIONS}. Combine triggers with "or" or split them across instances.`
    })
  }
  const valid: ValidSubscription[] = []
  input.forEach((sub, index) => {
    const ok = checkOne(sub, index, problems)
    if (ok && (sub as Subscription).enabled !== false) valid.push(ok)
  })
  if (problems.length > 0) throw new InvalidSubscriptionError(problems)
  return valid
}
