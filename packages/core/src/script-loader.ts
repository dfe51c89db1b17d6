/**
 * The one DOM-shaped piece of loading 1Flow's SDK: a `<script async>` injector, given the document (core touches no
 * global itself). Its own module so that an adapter can start the SDK's download without the rest of the loader.
 */
import type { SdkLoaderDeps } from './sdk-client.js'

/** The parts of a DOM document a script loader needs. */
export interface ScriptDocument {
  readonly scripts: ArrayLike<{ readonly src: string }>
  readonly head: { appendChild(node: never): unknown }
  createElement(tag: 'script'): {
    async: boolean
    src: string
    setAttribute(name: string, value: string): void
    onload: ((...args: never[]) => unknown) | null
    onerror: ((...args: never[]) => unknown) | null
  }
}

/**
 * `<script async src>` with the given attributes, resolved on load and rejected on error (404, blocked, CSP). A
 * script with the same `src` already in the document is never injected twice.
 */
export function createScriptLoader(doc: ScriptDocument): SdkLoaderDeps['loadScript'] {
  return (src, attributes) =>
    new Promise((resolve, reject) => {
      for (const existing of Array.from(doc.scripts)) if (existing.src === src) return resolve(existing)
      const script = doc.createElement('script')
      script.async = true
      script.src = src
      for (const [name, value] of Object.entries(attributes)) script.setAttribute(name, value)
      script.onload = resolve
      script.onerror = reject
      doc.head.appendChild(script as never)
    })
}
