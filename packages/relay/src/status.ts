/**
 * The live status page (off unless `statusPage.enabled`): what the relay is doing, updating every second
 * without a reload — queue depth, delivered / retried / dead-lettered, requests per second to 1Flow against
 * the limit, the oldest waiting event, the last errors, a chart of the last five minutes, and every lane side by
 * side: each 1Flow project, and each Segment source that receives 1Flow survey responses. Below them, a preview
 * of what 1Flow would receive for pasted events (`oneflow-relay preview`, read-only).
 */
const HISTORY_SECONDS = 300
const MAX_ERRORS = 20

export interface StatusSecond {
  readonly t: number
  requests: number
  delivered: number
}

/** Counts what the relay does, per second, for the status page (never any secret: no keys, no payloads). */
export class StatusTracker {
  readonly totals = { received: 0, delivered: 0, retried: 0, dead: 0, skipped: 0, requests: 0 }
  private readonly seconds: StatusSecond[] = []
  private readonly errors: Array<{ at: string; source: string; message: string }> = []
  /** Per lane: events delivered, and requests in the current and the last complete second. */
  private readonly lanes = new Map<string, { delivered: number; t: number; requests: number; lastSecond: number }>()

  constructor(private readonly now: () => number) {}

  private second(): StatusSecond {
    const t = Math.floor(this.now() / 1000)
    let last = this.seconds.at(-1)
    if (!last || last.t !== t) {
      last = { t, requests: 0, delivered: 0 }
      this.seconds.push(last)
      while (this.seconds.length > HISTORY_SECONDS) this.seconds.shift()
    }
    return last
  }

  received(n: number): void {
    this.totals.received += n
  }

  private lane(label: string) {
    const t = Math.floor(this.now() / 1000)
    let lane = this.lanes.get(label)
    if (!lane) this.lanes.set(label, (lane = { delivered: 0, t, requests: 0, lastSecond: 0 }))
    if (lane.t !== t) {
      lane.lastSecond = lane.t === t - 1 ? lane.requests : 0
      lane.t = t
      lane.requests = 0
    }
    return lane
  }

  /** A request on a lane; requests to 1Flow also count in the totals and the chart. */
  request(label: string, toOneFlow: boolean): void {
    this.lane(label).requests++
    if (!toOneFlow) return
    this.totals.requests++
    this.second().requests++
  }

  /** Events leaving a lane; delivered events to 1Flow also count in the totals and the chart. */
  outcome(kind: 'delivered' | 'retried' | 'dead' | 'skipped', n: number, label: string, toOneFlow: boolean): void {
    if (kind === 'delivered') this.lane(label).delivered += n
    if (!toOneFlow) return
    this.totals[kind] += n
    if (kind === 'delivered') this.second().delivered += n
  }

  /** A lane's figures: delivered so far, requests in the last complete second. */
  laneFigures(label: string): { delivered: number; requestsPerSecond: number } {
    const lane = this.lane(label)
    return { delivered: lane.delivered, requestsPerSecond: lane.lastSecond }
  }

  error(source: string, message: string): void {
    this.errors.unshift({ at: new Date(this.now()).toISOString(), source, message: message.slice(0, 300) })
    this.errors.length = Math.min(this.errors.length, MAX_ERRORS)
  }

  /** The last five minutes, one entry per second (seconds without activity filled with zeros). */
  history(): StatusSecond[] {
    const end = Math.floor(this.now() / 1000)
    const byT = new Map(this.seconds.map((s) => [s.t, s]))
    return Array.from({ length: HISTORY_SECONDS }, (_, i) => {
      const t = end - HISTORY_SECONDS + 1 + i
      return byT.get(t) ?? { t, requests: 0, delivered: 0 }
    })
  }

  lastErrors(): ReadonlyArray<{ at: string; source: string; message: string }> {
    return this.errors
  }
}

/**
 * The page itself: one self-contained HTML document that polls `/status/data` and posts pasted events to
 * `/status/preview` with the header that route asks for.
 */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>oneflow-relay status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2430; background: #f7f8fa; }
  h1 { font-size: 18px; margin: 0 0 16px; } h1 small { color: #6b7480; font-weight: normal; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
  .card { background: #fff; border: 1px solid #e2e5ea; border-radius: 8px; padding: 12px; }
  .card b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
  .card span { color: #6b7480; }
  .alert { background: #fff3f0; border-color: #f0b5a8; }
  svg { width: 100%; height: 160px; background: #fff; border: 1px solid #e2e5ea; border-radius: 8px; margin-top: 16px; }
  table { width: 100%; border-collapse: collapse; margin-top: 16px; background: #fff; }
  td, th { text-align: left; padding: 6px 8px; border-bottom: 1px solid #eef0f3; vertical-align: top; }
  .legend { color: #6b7480; margin-top: 4px; } .req { color: #2f6fde; } .ev { color: #1e9e6a; } .lim { color: #c2410c; }
  h2 { font-size: 15px; margin: 24px 0 8px; }
  textarea { display: block; width: 100%; box-sizing: border-box; margin: 8px 0; padding: 8px; border: 1px solid #e2e5ea; border-radius: 6px; font: 12px/1.4 ui-monospace, monospace; resize: vertical; }
  pre { margin: 8px 0 0; padding: 8px; background: #f7f8fa; border: 1px solid #eef0f3; border-radius: 6px; font-size: 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
  .card #previewSummary.problem { color: #b42318; }
</style></head>
<body>
<h1>oneflow-relay <small id="updated">connecting…</small></h1>
<div id="alerts"></div>
<div class="grid">
  <div class="card"><b id="depth">–</b><span>waiting in the queue</span></div>
  <div class="card"><b id="delivered">–</b><span>delivered to 1Flow</span></div>
  <div class="card"><b id="retried">–</b><span>retries scheduled</span></div>
  <div class="card"><b id="dead">–</b><span>dead-lettered</span></div>
  <div class="card"><b id="rate">–</b><span>requests/s to 1Flow (limit <i id="limit">–</i>)</span></div>
  <div class="card"><b id="oldest">–</b><span>oldest waiting event</span></div>
</div>
<svg id="chart" viewBox="0 0 300 100" preserveAspectRatio="none">
  <polyline id="limitLine" fill="none" stroke="#c2410c" stroke-dasharray="3 3" stroke-width="0.6" points=""></polyline>
  <polyline id="reqLine" fill="none" stroke="#2f6fde" stroke-width="1" points=""></polyline>
  <polyline id="evLine" fill="none" stroke="#1e9e6a" stroke-width="1" points=""></polyline>
</svg>
<div class="legend">last 5 minutes: <span class="req">requests/s</span> · <span class="ev">events delivered/s</span> · <span class="lim">request limit</span> (drawn when the traffic comes near it)</div>
<table><thead><tr><th>lane</th><th>sends to</th><th>waiting</th><th>delivered</th><th>requests/s</th><th>limit</th><th>state</th></tr></thead><tbody id="lanes"></tbody></table>
<table><thead><tr><th>when</th><th>source</th><th>last errors</th></tr></thead><tbody id="errors"><tr><td colspan="3">none</td></tr></tbody></table>
<h2>Preview</h2>
<div class="card">
  <span>What 1Flow would receive for events, from a source's mappings — the HTTP body and the web SDK call, or why not — as <code>oneflow-relay preview</code> prints it. Nothing is sent or stored.</span>
  <textarea id="previewInput" rows="6" spellcheck="false" aria-label="events to preview" placeholder='{"type": "track", "event": "Signed Up", "userId": "u1"} — one event, a {"batch": […]} body, or one event per line'></textarea>
  <label>source <select id="previewSource"></select></label>
  <button id="previewButton" type="button">Preview</button>
  <span id="previewSummary"></span>
  <div id="previewResults"></div>
</div>
<script>
  const $ = (id) => document.getElementById(id)
  const age = (ms) => ms < 1000 ? 'none' : ms < 60000 ? Math.round(ms / 1000) + ' s' : ms < 3600000 ? Math.round(ms / 60000) + ' min' : (ms / 3600000).toFixed(1) + ' h'
  const text = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c])
  function line(values, max) { return values.map((v, i) => i + ',' + (100 - (v / max) * 95).toFixed(2)).join(' ') }
  async function refresh() {
    try {
      const d = await (await fetch('status/data', { cache: 'no-store' })).json()
      $('updated').textContent = 'updated ' + new Date(d.time).toLocaleTimeString()
      $('depth').textContent = d.queue.pending + d.queue.leased
      $('delivered').textContent = d.totals.delivered
      $('retried').textContent = d.totals.retried
      $('dead').textContent = d.queue.dead
      $('rate').textContent = d.rate.requestsPerSecond
      $('limit').textContent = d.rate.limit
      $('oldest').textContent = age(d.queue.oldestAgeMs)
      const req = d.history.map((h) => h.requests), ev = d.history.map((h) => h.delivered)
      const max = Math.max(1, ...req, ...ev) * 1.15
      $('reqLine').setAttribute('points', line(req, max))
      $('evLine').setAttribute('points', line(ev, max))
      $('limitLine').setAttribute('points', d.rate.limit <= max ? line(Array(req.length).fill(d.rate.limit), max) : '')
      $('errors').innerHTML = d.errors.length ? d.errors.map((e) => '<tr><td>' + text(e.at) + '</td><td>' + text(e.source) + '</td><td>' + text(e.message) + '</td></tr>').join('') : '<tr><td colspan="3">none</td></tr>'
      $('lanes').innerHTML = d.lanes.map((l) => '<tr data-lane="' + text(l.lane) + '"><td>' + text(l.lane) + '</td><td>' + text(l.service) + '</td><td>' + l.waiting + '</td><td>' + l.delivered + '</td><td>' + l.requestsPerSecond + '</td><td>' + l.limit + '</td><td>' + text(l.alert ? 'paused: ' + l.alert : l.paused ? 'backing off' : 'sending') + '</td></tr>').join('')
      $('alerts').innerHTML = d.alerts.map((a) => '<div class="card alert"><b>' + text(a.source) + '</b>' + text(a.alert) + '</div>').join('')
      // Filled once: a refresh must not undo the operator's choice.
      if ($('previewSource').options.length === 0) for (const name of d.sources) $('previewSource').add(new Option(name, name))
    } catch (e) { $('updated').textContent = 'relay not answering' }
  }
  async function preview() {
    const summary = $('previewSummary'), source = $('previewSource').value
    $('previewButton').disabled = true
    summary.className = ''
    summary.textContent = 'previewing…'
    $('previewResults').replaceChildren()
    try {
      const res = await fetch('status/preview' + (source ? '?source=' + encodeURIComponent(source) : ''), {
        method: 'POST', cache: 'no-store', headers: { 'content-type': 'text/plain; charset=utf-8', 'x-oneflow-preview': '1' }, body: $('previewInput').value
      })
      const d = await res.json()
      if (!res.ok) { summary.className = 'problem'; summary.textContent = d.error; return }
      summary.textContent = d.events + ' event(s) for source ' + d.source + ': ' + d.sent + ' sent, ' + (d.events - d.sent) + ' not sent.'
      for (const result of d.results) {
        const pre = document.createElement('pre')
        pre.textContent = JSON.stringify(result, null, 2)
        $('previewResults').append(pre)
      }
    } catch (e) { summary.className = 'problem'; summary.textContent = 'relay not answering' }
    finally { $('previewButton').disabled = false }
  }
  $('previewButton').addEventListener('click', preview)
  $('previewInput').addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) preview() })
  refresh(); setInterval(refresh, 1000)
</script>
</body></html>`
