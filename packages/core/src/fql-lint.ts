/**
 * A checker for Segment FQL triggers. Segment's own parser (`@segment/destination-subscriptions`) accepts
 * many mistakes silently and then never matches, or matches too much: `==`, single quotes, uppercase AND/OR,
 * unknown fields such as anonymousId, mixed and/or without parentheses. This finds them and says what to
 * write instead. It has no dependencies so that it can run in the browser at configuration time.
 */

export interface FqlProblem {
  /** 1-based column where the problem starts. */
  readonly column: number
  readonly message: string
}

type TokenType =
  'lparen' | 'rparen' | 'comma' | 'string' | 'sqstring' | 'number' | 'op' | 'bang' | 'word' | 'bad' | 'eos'

interface Token {
  readonly type: TokenType
  readonly text: string
  readonly column: number
}

/** Left-hand sides FQL understands; any other field is silently dropped by Segment's parser. */
const BARE_FIELDS = new Set(['type', 'event', 'name', 'userId'])
const PATH_FIELDS = new Set(['properties', 'traits', 'context'])
const FUNCTIONS = new Set(['contains', 'match'])

function tokenize(fql: string): Token[] {
  const tokens: Token[] = []
  let i = 0
  while (i < fql.length) {
    const ch = fql[i] as string
    const column = i + 1
    if (/\s/.test(ch)) {
      i++
    } else if (ch === '(' || ch === ')' || ch === ',') {
      tokens.push({ type: ch === '(' ? 'lparen' : ch === ')' ? 'rparen' : 'comma', text: ch, column })
      i++
    } else if (ch === '"' || ch === "'") {
      let j = i + 1
      while (j < fql.length && fql[j] !== ch) j += fql[j] === '\\' ? 2 : 1
      if (j >= fql.length) {
        tokens.push({ type: 'bad', text: fql.slice(i), column })
        break
      }
      tokens.push({ type: ch === '"' ? 'string' : 'sqstring', text: fql.slice(i, j + 1), column })
      i = j + 1
    } else if (/[-+\d]/.test(ch)) {
      const m = /^[-+]?\d+(\.\d+)?/.exec(fql.slice(i))
      const text = m ? m[0] : ch
      tokens.push({ type: m ? 'number' : 'bad', text, column })
      i += text.length
    } else if (ch === '!' && fql[i + 1] !== '=') {
      tokens.push({ type: 'bang', text: '!', column })
      i++
    } else if (/[=!<>]/.test(ch)) {
      const text = /^(==|!=|<=|>=|=|<|>)/.exec(fql.slice(i))?.[0] ?? ch
      tokens.push({ type: 'op', text, column })
      i += text.length
    } else if (/[A-Za-z_$\\]/.test(ch)) {
      const m = /^(?:\\.|[A-Za-z0-9_$\-.])+/.exec(fql.slice(i)) as RegExpExecArray
      tokens.push({ type: 'word', text: m[0], column })
      i += m[0].length
    } else {
      tokens.push({ type: 'bad', text: ch, column })
      i++
    }
  }
  tokens.push({ type: 'eos', text: '', column: fql.length + 1 })
  return tokens
}

class Checker {
  private pos = 0
  readonly problems: FqlProblem[] = []

  constructor(private readonly tokens: Token[]) {}

  private peek(): Token {
    return this.tokens[this.pos] as Token
  }

  private next(): Token {
    const t = this.peek()
    if (t.type !== 'eos') this.pos++
    return t
  }

  private fail(t: Token, message: string): never {
    this.problems.push({ column: t.column, message })
    throw new StopParsing()
  }

  private note(t: Token, message: string): void {
    this.problems.push({ column: t.column, message })
  }

  check(): void {
    try {
      if (this.peek().type === 'eos')
        this.fail(this.peek(), 'the trigger is empty; write a condition such as type = "track"')
      this.group()
      const rest = this.peek()
      if (rest.type === 'rparen') this.fail(rest, 'a ")" has no matching "("')
      if (rest.type !== 'eos') this.fail(rest, `unexpected "${rest.text}"; join conditions with and / or`)
    } catch (error) {
      if (!(error instanceof StopParsing)) throw error
    }
  }

  private group(): void {
    const conjunctions = new Set<string>()
    let first: Token | undefined
    for (;;) {
      this.term()
      const t = this.peek()
      if (t.type !== 'word' || !/^(and|or)$/i.test(t.text)) return this.mixed(conjunctions, first)
      this.next()
      const lower = t.text.toLowerCase()
      if (t.text !== lower) {
        const effect = lower === 'or' ? 'instead, so the trigger matches far less' : 'regardless'
        this.note(
          t,
          `"${t.text}" must be lowercase: Segment's parser skips "${t.text}" and joins the conditions with "and" ${effect}; write "${lower}"`
        )
      }
      conjunctions.add(lower)
      first ??= t
      const after = this.peek()
      if (after.type === 'eos' || after.type === 'rparen')
        this.fail(t, `the trigger ends with "${t.text}"; add a condition after it or remove it`)
    }
  }

  private mixed(conjunctions: Set<string>, first: Token | undefined): void {
    if (conjunctions.size > 1 && first) {
      this.note(
        first,
        'mixes and with or without parentheses: FQL has no precedence and applies the last one to every condition; group them, e.g. type = "track" and (event = "A" or event = "B")'
      )
    }
  }

  private term(): void {
    const t = this.next()
    if (t.type === 'lparen') {
      this.group()
      const close = this.next()
      if (close.type !== 'rparen') this.fail(close, 'a "(" is never closed; add ")"')
      return
    }
    if (t.type === 'bang') {
      const fn = this.next()
      if (fn.type !== 'word' || !FUNCTIONS.has(fn.text)) this.fail(fn, '"!" may only negate contains(…) or match(…)')
      return this.func(fn)
    }
    if (t.type === 'word' && FUNCTIONS.has(t.text) && this.peek().type === 'lparen') return this.func(t)
    if (t.type !== 'word')
      this.fail(
        t,
        t.type === 'eos'
          ? 'a condition is missing at the end'
          : `expected a field such as type, event or properties.plan, got "${t.text}"`
      )
    this.field(t, false)
    const op = this.next()
    if (op.type !== 'op')
      this.fail(op, `expected an operator (=, !=, <, <=, >, >=) after "${t.text}", got "${op.text || 'the end'}"`)
    if (op.text === '==') this.note(op, 'FQL compares with a single "=", and "==" silently never matches; write "="')
    this.value(this.next())
  }

  private field(t: Token, inFunction: boolean): void {
    const head = t.text.split('.')[0] as string
    if (PATH_FIELDS.has(head)) {
      if (!t.text.includes('.') || t.text.endsWith('.')) this.note(t, `"${t.text}" needs a key, e.g. ${head}.plan`)
      return
    }
    if (BARE_FIELDS.has(t.text)) {
      if (inFunction && t.text === 'type')
        this.note(t, 'contains()/match() do not work on type; compare it with type = "track"')
      return
    }
    const hint =
      head === 'anonymousId'
        ? 'FQL cannot test anonymousId; use userId = null to select anonymous events'
        : /^(AND|OR)$/i.test(t.text)
          ? `"${t.text}" is misplaced`
          : `FQL only knows type, event, name, userId, properties.*, traits.* and context.*`
    this.note(t, `"${t.text}" is not a field FQL understands and the condition would be silently ignored: ${hint}`)
  }

  private value(t: Token): void {
    if (t.type === 'string' || t.type === 'number') return
    if (t.type === 'sqstring') {
      this.note(
        t,
        `single quotes are kept as part of the value, so ${t.text} never matches; write "${t.text.slice(1, -1)}"`
      )
      return
    }
    if (t.type === 'word' && /^(true|false|null)$/.test(t.text)) return
    if (t.type === 'word') {
      this.note(t, `the value ${t.text} is not quoted; write "${t.text}"`)
      return
    }
    this.fail(
      t,
      t.type === 'eos' ? 'a value is missing at the end' : `expected a value in double quotes, got "${t.text}"`
    )
  }

  private func(name: Token): void {
    const open = this.next()
    if (open.type !== 'lparen') this.fail(open, `${name.text} needs "(" — write ${name.text}(event, "text")`)
    const field = this.next()
    if (field.type !== 'word') this.fail(field, `${name.text}() needs a field first, e.g. ${name.text}(event, "text")`)
    this.field(field, true)
    const comma = this.next()
    if (comma.type !== 'comma') this.fail(comma, `${name.text}() takes two arguments separated by a comma`)
    const arg = this.next()
    if (arg.type === 'sqstring')
      this.note(arg, `single quotes are kept as part of the value; write "${arg.text.slice(1, -1)}"`)
    else if (arg.type !== 'string') this.fail(arg, `${name.text}()'s second argument must be a double-quoted string`)
    const inner = arg.text.slice(1, -1)
    if (name.text === 'match' && !inner.startsWith('*') && !inner.endsWith('*')) {
      this.note(
        arg,
        `match() needs "*" at the start or end ("${inner}*" = starts with, "*${inner}" = ends with); without it FQL drops the first character`
      )
    }
    const close = this.next()
    if (close.type !== 'rparen') this.fail(close, `${name.text}( is never closed; add ")"`)
  }
}

class StopParsing {}

/** Problems in an FQL trigger, each with what to write instead; an empty list means the trigger reads as written. */
export function lintFql(fql: string): FqlProblem[] {
  const checker = new Checker(tokenize(fql))
  checker.check()
  return checker.problems
}

/** The trigger with the mechanical mistakes fixed (== → =, single → double quotes, AND/OR → and/or). */
export function suggestFql(fql: string): string {
  return tokenize(fql)
    .filter((t) => t.type !== 'eos')
    .reduceRight((text, t) => {
      let replacement: string | undefined
      if (t.type === 'op' && t.text === '==') replacement = '='
      else if (t.type === 'sqstring') replacement = `"${t.text.slice(1, -1).replace(/"/g, '\\"')}"`
      else if (t.type === 'word' && /^(and|or)$/i.test(t.text)) replacement = t.text.toLowerCase()
      if (replacement === undefined) return text
      return text.slice(0, t.column - 1) + replacement + text.slice(t.column - 1 + t.text.length)
    }, fql)
}
