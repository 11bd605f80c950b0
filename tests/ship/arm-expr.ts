/**
 * A small evaluator of ARM template expressions (`[fn(args).prop]`), enough to render what a template
 * computes from its parameters (customData, outputs) in a test. Functions are supplied by the caller;
 * an unknown function, a syntax error or a missing parameter/variable throws, so a test cannot pass
 * on an expression it did not really evaluate.
 */
export type ArmFn = (...args: unknown[]) => unknown;

export interface ArmContext {
  parameters: Record<string, unknown>;
  variables: Record<string, unknown>;
  functions: Record<string, ArmFn>;
}

type Node =
  | { kind: 'str'; value: string }
  | { kind: 'num'; value: number }
  | { kind: 'call'; name: string; args: Node[] }
  | { kind: 'prop'; target: Node; name: string }
  | { kind: 'index'; target: Node; index: Node };

function parse(src: string): Node {
  let p = 0;
  const fail = (msg: string): never => {
    throw new Error(`ARM expression at ${p}: ${msg} in ${src}`);
  };
  const ws = () => {
    while (src[p] === ' ') p++;
  };
  function primary(): Node {
    ws();
    if (src[p] === "'") {
      let value = '';
      p++;
      for (;;) {
        if (p >= src.length) fail('unterminated string');
        if (src[p] === "'") {
          if (src[p + 1] === "'") {
            value += "'";
            p += 2;
            continue;
          }
          p++;
          break;
        }
        value += src[p++];
      }
      return { kind: 'str', value };
    }
    const num = /^-?\d+/.exec(src.slice(p));
    if (num) {
      p += num[0].length;
      return { kind: 'num', value: Number(num[0]) };
    }
    const id = /^[A-Za-z][A-Za-z0-9]*/.exec(src.slice(p));
    if (!id) fail('expected a string, number or function call');
    p += id![0].length;
    ws();
    if (src[p] !== '(') fail(`expected "(" after ${id![0]}`);
    p++;
    const args: Node[] = [];
    ws();
    if (src[p] === ')') {
      p++;
    } else {
      for (;;) {
        args.push(expr());
        ws();
        if (src[p] === ',') {
          p++;
          continue;
        }
        if (src[p] === ')') {
          p++;
          break;
        }
        fail('expected "," or ")"');
      }
    }
    return { kind: 'call', name: id![0], args };
  }
  function expr(): Node {
    let n = primary();
    for (;;) {
      if (src[p] === '.') {
        p++;
        const id = /^[A-Za-z_][A-Za-z0-9_-]*/.exec(src.slice(p));
        if (!id) fail('expected a property name');
        p += id![0].length;
        n = { kind: 'prop', target: n, name: id![0] };
      } else if (src[p] === '[') {
        p++;
        const index = expr();
        if (src[p] !== ']') fail('expected "]"');
        p++;
        n = { kind: 'index', target: n, index };
      } else {
        return n;
      }
    }
  }
  const n = expr();
  ws();
  if (p !== src.length) fail('trailing text');
  return n;
}

/** True for a string ARM evaluates as an expression (`[...]`, but not the `[[` escape). */
export function isExpression(s: string): boolean {
  return s.startsWith('[') && s.endsWith(']') && !s.startsWith('[[');
}

export function evaluate(value: string, ctx: ArmContext): unknown {
  if (!isExpression(value)) return value.startsWith('[[') ? value.slice(1) : value;
  const run = (n: Node): unknown => {
    switch (n.kind) {
      case 'str':
      case 'num':
        return n.value;
      case 'prop': {
        const t = run(n.target) as Record<string, unknown> | undefined;
        if (t === null || typeof t !== 'object' || !(n.name in t)) throw new Error(`property ${n.name} missing in ${value}`);
        return t[n.name];
      }
      case 'index': {
        const t = run(n.target) as Record<string, unknown>;
        return t[String(run(n.index))];
      }
      case 'call': {
        const args = n.args.map(run);
        if (n.name === 'parameters' || n.name === 'variables') {
          const bag = n.name === 'parameters' ? ctx.parameters : ctx.variables;
          const key = String(args[0]);
          if (!Object.prototype.hasOwnProperty.call(bag, key)) throw new Error(`${n.name}('${key}') is not defined`);
          const v = bag[key];
          return typeof v === 'string' ? evaluate(v, ctx) : v;
        }
        const fn = ctx.functions[n.name];
        if (!fn) throw new Error(`function ${n.name}() is not supported by the test evaluator`);
        return fn(...args);
      }
    }
  };
  return run(parse(value.slice(1, -1)));
}

/** The functions the templates in arm/ use for string building, with ARM's semantics. */
export const STRING_FUNCTIONS: Record<string, ArmFn> = {
  base64: (s) => Buffer.from(String(s), 'utf8').toString('base64'),
  concat: (...xs) => xs.map(String).join(''),
  replace: (s, from, to) => String(s).split(String(from)).join(String(to)),
  toLower: (s) => String(s).toLowerCase(),
  format: (f, ...xs) =>
    String(f).replace(/\{\{|\}\}|\{(\d+)\}/g, (m, i: string | undefined) => (m === '{{' ? '{' : m === '}}' ? '}' : String(xs[Number(i)]))),
};
