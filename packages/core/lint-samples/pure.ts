// A sample that keeps to the purity rules: ES built-ins and type-only imports are fine.
import type { InputField } from '@segment/actions-core'
import { toId } from './json-value'

export function pure(field: InputField): unknown {
  return [JSON.stringify(field), new Date(0).toISOString(), new Map([[1, toId(2)]]), Math.max(1, 2)]
}
