import type { GlobalSetting, InputField } from '@segment/actions-core'

/** Declares a field list once; the literal types are kept so payload types can be inferred from it. */
export function defineFields<const T extends Record<string, InputField>>(fields: T): T {
  return fields
}

/** Declares destination settings once, keeping literal types for inference. */
export function defineSettings<const T extends Record<string, GlobalSetting>>(fields: T): T {
  return fields
}

type ScalarOf<F> = F extends { type: 'string' | 'text' | 'password' }
  ? string
  : F extends { type: 'number' | 'integer' }
    ? number
    : F extends { type: 'boolean' }
      ? boolean
      : F extends { type: 'datetime' }
        ? string | number
        : F extends { type: 'object' }
          ? Record<string, unknown>
          : unknown

type ValueOf<F> =
  (F extends { multiple: true } ? Array<ScalarOf<F>> : ScalarOf<F>) | (F extends { allowNull: true } ? null : never)

type RequiredKeys<T> = { [K in keyof T]: T[K] extends { required: true } ? K : never }[keyof T]

type Flatten<T> = { [K in keyof T]: T[K] } & {}

/** The payload an action receives, inferred from its field definitions (never hand-copied). */
export type PayloadOf<T extends Record<string, InputField | GlobalSetting>> = Flatten<
  { [K in RequiredKeys<T>]: ValueOf<T[K]> } & { [K in Exclude<keyof T, RequiredKeys<T>>]?: ValueOf<T[K]> }
>
