import { skip, type Skip } from './commands.js'
import { deniedConsent } from './consent.js'

/** The skip for an event whose consent preferences deny what 1Flow needs, or undefined when it may be sent. */
export function consentSkip(event: { readonly context?: unknown }, required: readonly string[]): Skip | undefined {
  const denied = deniedConsent(event, required)
  if (denied.length === 0) return undefined
  return skip(
    'no-consent',
    `Not sent: no consent for ${denied.map((c) => JSON.stringify(c)).join(', ')}, which 1Flow needs (consentCategories); the visitor's consent preferences do not grant it.`
  )
}
