// Stand-in for liquidjs in browser bundles, as Segment's own browser builds use one: an @liquid template
// comes back unchanged, so the directive is a no-op in the browser (and the 100 KB engine stays out).
export class Liquid {
  registerTag() {}
  registerFilter() {}
  fullVariablesSync() {
    return []
  }
  parseAndRenderSync(template) {
    return template
  }
}
