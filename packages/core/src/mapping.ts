/**
 * `@oneflow-seg/core/mapping`: custom subscriptions resolved exactly as Segment resolves them — triggers by
 * `@segment/destination-subscriptions` (FQL), mappings by actions-core's mapping-kit. This sub-entry is the
 * only place core imports either package; the main entry stays import-free so browser bundles without
 * custom mappings never load them.
 */
import { transform } from '@segment/actions-core/mapping-kit'
import { parseFql, validate } from '@segment/destination-subscriptions'
import { InvalidSubscriptionError, type SubscriptionProblem } from './subscription-errors.js'
import { finishRoutes, type MapOptions, type MappedResult, type Route } from './route.js'
import type { SegmentEvent } from './segment-event.js'
import type { ValidSubscription } from './subscription-shape.js'
import { validateSubscriptions } from './subscriptions.js'

type Condition = Exclude<ReturnType<typeof parseFql>, { error: Error }>

/** A validated subscription with its trigger parsed once. */
export interface CompiledSubscription extends ValidSubscription {
  readonly condition: Condition
}

function errorText(error: unknown): string {
  if (error instanceof Error) {
    const inner = (error as Error & { errors?: unknown[] }).errors
    if (Array.isArray(inner) && inner.length > 0)
      return inner.map((e) => (e instanceof Error ? e.message : String(e))).join('; ')
    return error.message
  }
  return String(error)
}

/**
 * Validates subscriptions with core's rules, then parses every trigger with Segment's FQL parser and
 * checks every mapping's directives with mapping-kit. Throws InvalidSubscriptionError listing each problem.
 */
export function compileSubscriptions(input: unknown): CompiledSubscription[] {
  const valid = validateSubscriptions(input)
  const problems: SubscriptionProblem[] = []
  const compiled: CompiledSubscription[] = []
  valid.forEach((sub, index) => {
    const condition = parseFql(sub.subscribe)
    if ('error' in condition) {
      problems.push({
        index,
        part: 'subscribe',
        message: `Mapping "${sub.name}": Segment's FQL parser refuses ${JSON.stringify(sub.subscribe)}: ${condition.error.message}.`
      })
      return
    }
    try {
      transform(sub.mapping as Parameters<typeof transform>[0], {})
    } catch (error) {
      problems.push({ index, part: 'mapping', message: `Mapping "${sub.name}": ${errorText(error)}` })
      return
    }
    compiled.push({ ...sub, condition })
  })
  if (problems.length > 0) throw new InvalidSubscriptionError(problems)
  return compiled
}

/** The routes (matching subscriptions with payloads resolved by mapping-kit) for an event. */
export function subscriptionRoutes(event: SegmentEvent, subscriptions: readonly CompiledSubscription[]): Route[] {
  const routes: Route[] = []
  for (const sub of subscriptions) {
    if (!validate(sub.condition, event)) continue
    routes.push({
      subscription: sub.name,
      actionKey: sub.partnerAction,
      payload: transform(sub.mapping as Parameters<typeof transform>[0], event as Record<string, unknown>)
    })
  }
  return routes
}

/** Maps an event through custom subscriptions: FQL match, mapping-kit resolution, validation, command. */
export function mapWithSubscriptions(
  event: SegmentEvent,
  subscriptions: readonly CompiledSubscription[],
  options: MapOptions = {}
): MappedResult[] {
  return finishRoutes(event, subscriptionRoutes(event, subscriptions), options)
}
