/**
 * Consent, as Segment's Consent Management enforces it: an event stamped with the visitor's consent preferences
 * (`context.consent.categoryPreferences`, category id → true/false) reaches 1Flow only when every category 1Flow is
 * configured to need is granted (`true`); an event without consent preferences is not under consent enforcement
 * and flows as usual. The adapters that run outside Segment's own enforcement (the Analytics.js plugin, the relay,
 * device and cloud mode with the setting) apply the same rule.
 */
/** The categories of `required` an event's consent preferences do not grant ([] when it carries none, or all are granted). */
export function deniedConsent(event: { readonly context?: unknown }, required: readonly string[]): string[] {
  if (required.length === 0) return []
  const context = event.context as { consent?: { categoryPreferences?: unknown } } | undefined
  const preferences = context?.consent?.categoryPreferences
  if (typeof preferences !== 'object' || preferences === null || Array.isArray(preferences)) return []
  return required.filter((category) => (preferences as Record<string, unknown>)[category] !== true)
}
