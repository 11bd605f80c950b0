/**
 * A strict parser for the small YAML subset arm/cvm/cloud-init.yaml is written in (no YAML package is
 * a dependency): block mappings, block sequences (of scalars or of mappings), `|` literal block
 * scalars, plain and single-quoted scalars, full-line comments. Anything outside that subset (tabs,
 * trailing spaces, flow collections, anchors, tags, other block scalar styles, double quotes, YAML 1.1
 * booleans, octal-looking numbers, inline comments, duplicate keys) is refused with the line number,
 * so a file that parses here means the same to cloud-init's YAML loader.
 */
export class YamlSubsetError extends Error {}

const KEY = /^([A-Za-z0-9_-]+):(?: (.*))?$/;
const ITEM_MAPPING = /^[A-Za-z0-9_-]+:(?: |$)/;

export function parseYamlSubset(src: string): unknown {
  const lines = src.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((l, n) => {
    if (l.includes('\t')) throw new YamlSubsetError(`line ${n + 1}: tab character`);
    if (/ $/.test(l)) throw new YamlSubsetError(`line ${n + 1}: trailing whitespace`);
    if (l === '---' || l === '...') throw new YamlSubsetError(`line ${n + 1}: document markers are outside the subset`);
  });
  let i = 0;
  const fail = (n: number, msg: string): never => {
    throw new YamlSubsetError(`line ${n + 1}: ${msg}`);
  };
  const indentOf = (l: string) => l.length - l.trimStart().length;
  const ignorable = (l: string) => l.trim() === '' || l.trimStart().startsWith('#');
  const skip = () => {
    while (i < lines.length && ignorable(lines[i])) i++;
  };

  function scalar(s: string, n: number): string | number | boolean {
    if (s.startsWith("'")) {
      if (s.length < 2 || !s.endsWith("'")) fail(n, 'unterminated single-quoted scalar');
      const inner = s.slice(1, -1);
      if (inner.replace(/''/g, '').includes("'")) fail(n, 'lone quote inside a single-quoted scalar');
      return inner.replace(/''/g, "'");
    }
    if (/^["[\]{}&*!|>%@`]/.test(s) || /^[-?:](\s|$)/.test(s)) fail(n, `"${s}" starts with an indicator outside the subset`);
    if (s.includes(': ') || s.endsWith(':') || s.includes(' #')) fail(n, `"${s}" needs quoting (": " or " #")`);
    if (s === 'true') return true;
    if (s === 'false') return false;
    if (/^(null|~|yes|no|on|off|y|n)$/i.test(s) || /^(true|false)$/i.test(s)) fail(n, `"${s}" is ambiguous between YAML versions: quote it`);
    if (/^-?0\d/.test(s) || /^-?\d*\.\d*([eE][-+]?\d+)?$/.test(s) || /^0[xo]/i.test(s)) fail(n, `"${s}" looks octal, hex or float: quote it`);
    if (/^-?\d+$/.test(s)) return Number(s);
    return s;
  }

  function block(parentIndent: number, n: number): string {
    const out: string[] = [];
    let contentIndent = -1;
    while (i < lines.length) {
      const l = lines[i];
      if (l === '') {
        out.push('');
        i++;
        continue;
      }
      const ind = indentOf(l);
      if (ind <= parentIndent) break;
      if (contentIndent < 0) contentIndent = ind;
      if (ind < contentIndent) fail(i, 'block scalar line indented less than its first line');
      out.push(l.slice(contentIndent));
      i++;
    }
    if (contentIndent < 0) fail(n, 'empty block scalar');
    while (out.length && out[out.length - 1] === '') out.pop();
    return `${out.join('\n')}\n`;
  }

  function mapping(indent: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (;;) {
      skip();
      if (i >= lines.length) break;
      const ind = indentOf(lines[i]);
      if (ind < indent) break;
      if (ind > indent) fail(i, `unexpected indentation ${ind} (mapping at ${indent})`);
      const t = lines[i].slice(ind);
      const m = KEY.exec(t);
      if (!m) fail(i, `expected "key: value", got "${t}"`);
      const [, key, rest] = m as RegExpExecArray;
      if (Object.prototype.hasOwnProperty.call(out, key)) fail(i, `duplicate key "${key}"`);
      const n = i++;
      if (rest === undefined) {
        skip();
        if (i >= lines.length || indentOf(lines[i]) <= indent) fail(n, `"${key}" has no value`);
        out[key] = node(indentOf(lines[i]));
      } else if (rest === '|') {
        out[key] = block(indent, n);
      } else if (/^[|>]/.test(rest)) {
        fail(n, `block scalar style "${rest}" is outside the subset (only "|")`);
      } else {
        out[key] = scalar(rest, n);
      }
    }
    return out;
  }

  function sequence(indent: number): unknown[] {
    const out: unknown[] = [];
    for (;;) {
      skip();
      if (i >= lines.length) break;
      const ind = indentOf(lines[i]);
      if (ind < indent) break;
      if (ind > indent) fail(i, `unexpected indentation ${ind} (sequence at ${indent})`);
      const t = lines[i].slice(ind);
      if (!t.startsWith('- ')) fail(i, `expected "- item", got "${t}"`);
      const item = t.slice(2);
      if (item.startsWith(' ')) fail(i, 'more than one space after "-"');
      if (ITEM_MAPPING.test(item)) {
        // `- key: value` opens a mapping whose keys sit two columns right of the dash.
        lines[i] = ' '.repeat(ind + 2) + item;
        out.push(mapping(ind + 2));
      } else {
        out.push(scalar(item, i));
        i++;
      }
    }
    return out;
  }

  function node(indent: number): unknown {
    skip();
    const t = lines[i].slice(indent);
    if (t === '-') fail(i, 'an empty "-" item is outside the subset');
    return t.startsWith('- ') ? sequence(indent) : mapping(indent);
  }

  skip();
  if (i >= lines.length) throw new YamlSubsetError('empty document');
  if (indentOf(lines[i]) !== 0) fail(i, 'the document must start at column 0');
  const doc = node(0);
  skip();
  if (i < lines.length) fail(i, 'text after the document');
  return doc;
}
