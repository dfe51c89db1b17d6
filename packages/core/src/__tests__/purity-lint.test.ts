import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ESLint } from 'eslint'
import { describe, expect, it } from 'vitest'

const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const repoRoot = join(packageDir, '..', '..')

// Lints a sample as if it were a file in core's src/, with the repository's real ESLint config.
async function lintAsCoreSource(sample: string, name = 'sample.ts') {
  const eslint = new ESLint({ cwd: repoRoot })
  const [result] = await eslint.lintText(readFileSync(join(packageDir, 'lint-samples', sample), 'utf8'), {
    filePath: join(packageDir, 'src', name)
  })
  return result!.messages.map((m) => ({ line: m.line, rule: m.ruleId, message: m.message }))
}

describe('core purity lint rule', () => {
  it('reports DOM globals, Node globals, Node built-ins and runtime imports in core sources', async () => {
    const messages = await lintAsCoreSource('impure.ts')
    const byLine = (line: number) => [...new Set(messages.filter((m) => m.line === line).map((m) => m.rule))]
    const texts = (line: number) =>
      messages
        .filter((m) => m.line === line)
        .map((m) => m.message)
        .join(' | ')
    expect(byLine(2)).toEqual(['@typescript-eslint/no-restricted-imports']) // node:fs
    expect(texts(2)).toContain('Node built-ins')
    expect(byLine(3)).toEqual(['@typescript-eslint/no-restricted-imports']) // events
    expect(texts(3)).toContain('Node built-ins')
    expect(byLine(4)).toEqual(['@typescript-eslint/no-restricted-imports']) // runtime import of a package
    expect(texts(4)).toContain('imports nothing at run time')
    expect(byLine(7)).toEqual(['no-restricted-globals']) // document
    expect(byLine(8)).toEqual(['no-restricted-globals']) // window
    expect(byLine(9)).toEqual(['no-restricted-globals']) // process
    expect(byLine(10)).toEqual(['no-restricted-globals']) // setTimeout
    expect(byLine(11)).toEqual(['no-restricted-globals']) // globalThis
    expect(messages.find((m) => m.line === 8)?.message).toContain('core is pure')
  })

  it('accepts ES built-ins and type-only imports', async () => {
    expect(await lintAsCoreSource('pure.ts')).toEqual([])
  })

  it('lets only the mapping sub-entry load mapping-kit at run time', async () => {
    const messages = await lintAsCoreSource('impure.ts', 'mapping.ts')
    expect(messages.filter((m) => m.line === 4)).toEqual([])
    expect(messages.filter((m) => m.line === 2).map((m) => m.rule)).toEqual([
      '@typescript-eslint/no-restricted-imports'
    ])
  })

  it('leaves files outside core alone', async () => {
    const eslint = new ESLint({ cwd: repoRoot })
    const [result] = await eslint.lintText(readFileSync(join(packageDir, 'lint-samples', 'impure.ts'), 'utf8'), {
      filePath: join(repoRoot, 'packages', 'relay', 'src', 'sample.ts')
    })
    expect(result!.messages.filter((m) => m.ruleId === 'no-restricted-globals')).toEqual([])
  })
})

describe('error classes lint rule', () => {
  const sample = [
    "import { OneFlowError } from '@oneflow-seg/core'",
    'export class Plain extends Error {}',
    "export class Typed extends OneFlowError { readonly code = 'X'; readonly remedy = 'retry' }",
    "export function fail(): never { throw new Error('bare') }"
  ].join('\n')
  const lint = async (file: string) => {
    const eslint = new ESLint({ cwd: repoRoot })
    const [result] = await eslint.lintText(sample, { filePath: join(repoRoot, file) })
    return result!.messages
      .filter((m) => m.ruleId === 'no-restricted-syntax')
      .map((m) => [m.line, m.message.split(' (')[0]])
  }

  it.each([
    'packages/relay/src/sample.ts',
    'packages/actions-destination/src/sample.ts',
    'packages/ajs-plugin/src/sample.ts'
  ])('in %s: an Error subclass and a bare Error are refused; a OneFlowError subclass is not', async (file) => {
    expect(await lint(file)).toEqual([
      [2, "Error classes extend core's OneFlowError"],
      [4, 'Throw a typed error']
    ])
  })

  it("leaves core's own OneFlowError and the tests alone", async () => {
    expect(await lint('packages/core/src/errors.ts')).toEqual([[4, 'Throw a typed error']])
    expect(await lint('packages/relay/src/__tests__/sample.test.ts')).toEqual([])
  })
})
