/**
 * Stand-in for liquidjs in browser builds, as Segment's own browser builds use one: an `@liquid` template comes
 * back unchanged, so the directive is a no-op in the browser and the 100 KB engine stays out. It is bundled in
 * place of liquidjs into the `browser` build of `@oneflow-seg/core/mapping` (Node builds use the real engine).
 */
export class Liquid {
  registerTag(): void {}
  registerFilter(): void {}
  fullVariablesSync(): string[] {
    return []
  }
  parseAndRenderSync(template: string): string {
    return template
  }
}
