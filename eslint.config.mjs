import { builtinModules } from 'node:module'
import globals from 'globals'
import tseslint from 'typescript-eslint'

// Core must run anywhere (browser, Node, edge): no DOM or Node globals, no Node built-ins. ES built-ins
// (Date, JSON, Map, …) stay allowed; everything a runtime adds on top is refused.
const esBuiltins = new Set(Object.keys(globals.es2021))
const runtimeGlobals = [
  ...new Set([
    ...Object.keys(globals.browser),
    ...Object.keys(globals.node),
    ...Object.keys(globals.nodeBuiltin),
    'globalThis'
  ])
].filter((name) => !esBuiltins.has(name) || name === 'globalThis')

const nodeBuiltinRule = [
  {
    regex: `^(node:.*|(${builtinModules.map((m) => m.replace(/[/]/g, '\\/')).join('|')})(\\/.*)?)$`,
    message: 'core is pure: Node built-ins are not available in browsers or edge runtimes.'
  }
]

/** The purity rules for @oneflow-seg/core's sources (exported so a test can prove they fire). */
export const corePurity = {
  'no-restricted-globals': [
    'error',
    ...runtimeGlobals.map((name) => ({
      name,
      message: `core is pure: "${name}" is a DOM/Node global. Take it as a parameter from the adapter instead.`
    }))
  ]
}

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/.turbo/**', '**/coverage/**'] },
  {
    files: ['**/*.ts', '**/*.mts', '**/*.cts'],
    extends: [tseslint.configs.recommended],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-restricted-syntax': [
        'error',
        {
          selector: "ThrowStatement > NewExpression[callee.name='Error']",
          message: 'Throw a typed error (a class with name, code and what to do), never a bare Error.'
        },
        { selector: 'ThrowStatement > Literal', message: 'Throw an Error subclass, never a bare value.' }
      ]
    }
  },
  {
    // What the published packages throw is matched by class and code, never by message: every error class
    // extends core's OneFlowError (a `code` and a `remedy`), the one class that extends Error itself.
    files: ['packages/{core,relay,actions-destination,ajs-plugin}/src/**/*.ts'],
    ignores: ['packages/core/src/errors.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: "ThrowStatement > NewExpression[callee.name='Error']",
          message: 'Throw a typed error (a class with name, code and what to do), never a bare Error.'
        },
        { selector: 'ThrowStatement > Literal', message: 'Throw an Error subclass, never a bare value.' },
        {
          selector: "ClassDeclaration[superClass.name='Error']",
          message: "Error classes extend core's OneFlowError (a code and a remedy), so callers match them by class."
        }
      ]
    }
  },
  {
    files: ['**/__tests__/**', '**/*.test.ts', 'bench/**', 'examples/**'],
    rules: { 'no-restricted-syntax': 'off' }
  },
  {
    files: ['packages/core/src/**/*.ts'],
    ignores: ['packages/core/src/**/__tests__/**'],
    rules: {
      ...corePurity,
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            ...nodeBuiltinRule,
            {
              regex: '^(?!\\.{1,2}/)',
              allowTypeImports: true,
              message:
                "core's main entry imports nothing at run time: use `import type`, or move the code to src/mapping.ts."
            }
          ]
        }
      ]
    }
  },
  {
    // The mapping sub-entry is the one place allowed to load Segment's mapping-kit and FQL at run time.
    files: ['packages/core/src/mapping.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', { patterns: nodeBuiltinRule }]
    }
  }
)
