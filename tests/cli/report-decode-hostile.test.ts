/**
 * `skr report decode` on hostile HCL reports (issue 20, item 7): runtime claims nested thousands of
 * levels deep are refused (the parser bounds the depth) instead of printing megabytes; a report with
 * many claims prints a bounded view; `hcl_evidence` with characters that are not base64 is refused
 * (Node's lenient decoder would skip them).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildHclReport, hclReportData, MAX_CLAIMS_DEPTH } from '../../src/cvm/hcl';
import { MAX_CLAIMS_OUTPUT_CHARS } from '../../src/cli/commands/report-decode';
import { SimulatedPlatform } from '../../src/snp/simulator';
import { runCli as run } from '../helpers/cli';

describe('skr report decode: hostile HCL reports', () => {
  const platform = new SimulatedPlatform({ reportVersion: 2 });
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-decode-hostile-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const hcl = (claims: Buffer) => buildHclReport({ snpReport: platform.signReport({ reportData: hclReportData(claims), vmpl: 0 }), claimsBytes: claims, padTo: 8192 });
  const write = (name: string, data: Buffer | string) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, data);
    return f;
  };

  it('claims nested 3,300 levels deep are refused, naming the bound; the output stays small', async () => {
    const deep = Buffer.from(`{"a":${'['.repeat(3300)}${']'.repeat(3300)}}`);
    const r = await run('report', 'decode', write('deep.bin', hcl(deep)));
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(new RegExp(`runtime claims nest deeper than ${MAX_CLAIMS_DEPTH} levels`));
    expect(r.out.length + r.err.length).toBeLessThan(4096);
    // At the bound exactly it decodes.
    const ok = Buffer.from(`{"a":${'['.repeat(MAX_CLAIMS_DEPTH - 1)}${']'.repeat(MAX_CLAIMS_DEPTH - 1)}}`);
    expect((await run('report', 'decode', write('ok.bin', hcl(ok)))).code).toBe(0);
  });

  it('many claims within the depth bound: the printed claims are cut at the output bound, with a note', async () => {
    // ~6 KB of claims that pretty-print to far more (each value on its own indented line).
    const wide = Buffer.from(JSON.stringify({ x: [[[[[[[[[[[[[[Array.from({ length: 3000 }, () => 0)]]]]]]]]]]]]]] }));
    const r = await run('report', 'decode', write('wide.bin', hcl(wide)));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\.\.\. \(\d+ more characters not shown; --json prints them\)/);
    expect(r.out.length).toBeLessThan(MAX_CLAIMS_OUTPUT_CHARS + 16 * 1024);
  });

  it('hcl_evidence that is not strict base64 is refused', async () => {
    const good = hcl(Buffer.from('{"keys":[]}')).toString('base64');
    const ok = await run('report', 'decode', write('good.json', JSON.stringify({ hcl_evidence: good })), '--json');
    expect(ok.code).toBe(0);
    const bad = `${good.slice(0, 100)}!*${good.slice(100)}`;
    const r = await run('report', 'decode', write('bad.json', JSON.stringify({ hcl_evidence: bad })));
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/hcl_evidence is not valid base64/);
  });
});
