/**
 * The layering of src/ (docs/architecture.md): no import cycles, src/common imports nothing above it,
 * the SNP layer nothing from src/certs; and the ESLint rules that keep it so (and keep certificates
 * from being built with `new X509Certificate`) really fire.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { findCycles, importGraph } from './import-graph';

const ROOT = path.resolve(__dirname, '..', '..');
const SRC = path.join(ROOT, 'src');

describe('the import graph of src/', () => {
  const graph = importGraph(SRC);
  const arrows = (from: (f: string) => boolean, to: (f: string) => boolean) =>
    [...graph].flatMap(([f, ts]) => (from(f) ? ts.filter(to).map((t) => `${f} -> ${t}`) : []));

  it('is read whole, type-only imports included', () => {
    expect(graph.size).toBeGreaterThan(100);
    expect(graph.get('maa/verify-token.ts')).toContain('asn1/certificate.ts');
    // config.ts needs logger.ts for a type only; that is still an arrow.
    expect(graph.get('server/config.ts')).toContain('server/logger.ts');
  });

  it('has no cycle', () => {
    expect(findCycles(graph)).toEqual([]);
  });

  it('keeps src/common at the bottom and src/snp below src/certs', () => {
    expect(arrows((f) => f.startsWith('common/'), (t) => !t.startsWith('common/'))).toEqual([]);
    expect(arrows((f) => f.startsWith('snp/'), (t) => t.startsWith('certs/'))).toEqual([]);
  });
});

describe('findCycles', () => {
  it('reports each cycle it meets as the path that closes it', () => {
    const g = new Map([
      ['a', ['b']],
      ['b', ['c']],
      ['c', ['a', 'd']],
      ['d', []],
      ['e', ['e']],
    ]);
    expect(findCycles(g)).toEqual([
      ['a', 'b', 'c', 'a'],
      ['e', 'e'],
    ]);
    expect(findCycles(new Map([['a', ['b']], ['b', []]]))).toEqual([]);
  });
});

describe('the ESLint rules', () => {
  // One ESLint run over snippets placed (virtually) at the given paths, with the repository's config.
  const snippets: [string, string][] = [
    ['src/common/upward.ts', "import { statusOf } from '../server/http-errors';\nexport const s = statusOf(new Error('x'));\n"],
    ['src/common/upward-type.ts', "import type { Logger } from '../server/logger';\nexport type L = Logger;\n"],
    ['src/common/sideways.ts', "import { clip } from './clip';\nexport const c = clip('x');\n"],
    ['src/maa/loose-cert.ts', "import { X509Certificate } from 'node:crypto';\nexport const c = (b: Buffer) => new X509Certificate(b);\n"],
    ['tests/maa/loose-cert.test.ts', "import * as crypto from 'node:crypto';\nexport const c = (b: Buffer) => new crypto.X509Certificate(b);\n"],
    ['src/asn1/certificate.ts', "import { X509Certificate } from 'node:crypto';\nexport const c = (b: Buffer) => new X509Certificate(b);\n"],
  ];
  const script = `
    const { ESLint } = require('eslint');
    (async () => {
      const eslint = new ESLint({ cwd: process.cwd() });
      const out = {};
      for (const [file, text] of JSON.parse(process.argv[1])) {
        const [r] = await eslint.lintText(text, { filePath: file });
        out[file] = r.messages.map((m) => m.ruleId);
      }
      process.stdout.write(JSON.stringify(out));
    })().catch((e) => { console.error(e); process.exit(2); });`;
  let rules: Record<string, string[]>;

  beforeAll(() => {
    const r = spawnSync(process.execPath, ['-e', script, JSON.stringify(snippets)], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr).toBe('');
    rules = JSON.parse(r.stdout) as Record<string, string[]>;
  }, 130_000);

  it('refuse an import from a layer above src/common, type-only too', () => {
    expect(rules['src/common/upward.ts']).toEqual(['no-restricted-imports']);
    expect(rules['src/common/upward-type.ts']).toEqual(['no-restricted-imports']);
    expect(rules['src/common/sideways.ts']).toEqual([]);
  });

  it('refuse new X509Certificate everywhere but src/asn1/certificate.ts', () => {
    expect(rules['src/maa/loose-cert.ts']).toEqual(['no-restricted-syntax']);
    expect(rules['tests/maa/loose-cert.test.ts']).toEqual(['no-restricted-syntax']);
    expect(rules['src/asn1/certificate.ts']).toEqual([]);
  });
});
