/** Which call shape the stand-in SDK exposes: 1Flow's documented object, or the function Segment's reference calls. */
export type SdkShape = 'methods' | 'function'

export interface RecordingSdkOptions {
  readonly shape?: SdkShape
}

/** What the recording SDK writes to `window.__oneflowRecorder`. */
export interface SdkRecord {
  /** Calls in method form (`['logUser', id, traits]`, `['logEvent', name, properties]`); function-form calls are translated. */
  readonly calls: Array<[string, unknown, unknown]>
  /** Calls exactly as made. */
  readonly raw: unknown[][]
  /** How many times the script executed (a second copy never replaces the first). */
  readonly loads: number
  /** The `data-api-key` of the script element that loaded it. */
  readonly apiKey: string | null
  readonly shape: SdkShape
}

/**
 * Source of a stand-in for 1Flow's web SDK (https://1flow.app/js/1flow.js) that records every call.
 * Serve it at the SDK URL in browser tests; serve it late or answer 404 to test loading failures.
 */
export function recordingSdkScript(options: RecordingSdkOptions = {}): string {
  const shape: SdkShape = options.shape ?? 'methods'
  return `(function () {
  var w = window;
  var rec = w.__oneflowRecorder || (w.__oneflowRecorder = { calls: [], raw: [], loads: 0, apiKey: null, shape: ${JSON.stringify(shape)} });
  rec.loads++;
  if (rec.loads > 1) return;
  var el = document.currentScript || document.querySelector('script[data-api-key]');
  rec.apiKey = el ? el.getAttribute('data-api-key') : null;
  function copy(v) { return v === undefined ? undefined : JSON.parse(JSON.stringify(v)); }
  if (${JSON.stringify(shape)} === 'function') {
    w._1flow = function (method, a, b) {
      rec.raw.push([method, a, copy(b)]);
      if (method === 'identify') rec.calls.push(['logUser', a, copy(b)]);
      else if (method === 'track') rec.calls.push(['logEvent', a, copy(b && b.properties)]);
      else rec.calls.push(['unknown:' + method, a, copy(b)]);
    };
  } else {
    w._1flow = {
      logUser: function (id, details) { rec.raw.push(['logUser', id, copy(details)]); rec.calls.push(['logUser', id, copy(details)]); },
      logEvent: function (name, params) { rec.raw.push(['logEvent', name, copy(params)]); rec.calls.push(['logEvent', name, copy(params)]); },
      on: function () {}
    };
  }
  w.glob = w.glob || { projectApiKey: rec.apiKey };
})();
`
}
