/**
 * `skr report decode` / `skr report verify` on an Azure CVM HCL report (the real vector of
 * ../shared/vectors/real-azure-cvm): decoded header, embedded report and claims; verification with the
 * step names, and a refusal at hcl-claims-binding when one claims byte changes.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HCL_CLAIMS_OFFSET } from '../../src/cvm/hcl';
import { runCli as run } from '../helpers/cli';
import { describeVectors, vector, vectorPath } from '../helpers/vectors';

describeVectors('skr report decode/verify on the real Azure CVM HCL report', () => {
  const hclPath = vectorPath('real-azure-cvm/hcl_report.bin');
  const certs = vectorPath('real-azure-cvm/vcek_ask_ark.pem');
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cli-hcl-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const write = (name: string, data: string | Buffer) => {
    const p = path.join(tmp, name);
    fs.writeFileSync(p, data);
    return p;
  };

  it('decodes the header, the embedded report and the runtime claims', async () => {
    const r = await run('report', 'decode', hclPath);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/signature HCLA, version 1, .*request type 2/);
    expect(r.out).toMatch(/claims 1110 bytes/);
    expect(r.out).toMatch(/^ {2}vmpl +0$/m);
    expect(r.out).toMatch(/^ {2}policy +0x3001f /m);
    expect(r.out).toMatch(/^ {2}reported_tcb +0x7308000000000003 /m);
    expect(r.out).toContain('"kid": "HCLAkPub"');
    expect(r.out).toContain('"vmUniqueId": "911B0EF8-9DBA-48B0-B275-4E4DF2D39252"');
  });

  it('decodes to JSON with --json, and accepts the hex form', async () => {
    const r = await run('report', 'decode', hclPath, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as { header: { signature: string; version: number }; report: { vmpl: number; version: number }; varData: { claimsSize: number; hashType: number }; claims: { keys: { kid: string }[] } };
    expect(j.header).toMatchObject({ signature: 'HCLA', version: 1 });
    expect(j.report).toMatchObject({ vmpl: 0, version: 2 });
    expect(j.varData).toMatchObject({ claimsSize: 1110, hashType: 1 });
    expect(j.claims.keys.map((k) => k.kid)).toEqual(['HCLAkPub', 'HCLEkPub']);
    const hex = await run('report', 'decode', write('hcl.hex', vector('real-azure-cvm/hcl_report.bin').toString('hex') + '\n'), '--json');
    expect(hex.code).toBe(0);
    expect(JSON.parse(hex.out)).toEqual(j);
    const answer = await run('report', 'decode', write('raw.json', JSON.stringify({ hcl_report: vector('real-azure-cvm/hcl_report.bin').toString('hex') })), '--json');
    expect(JSON.parse(answer.out)).toEqual(j);
    const combined = await run('report', 'decode', write('combined.json', JSON.stringify({ evidence: 'AA==', hcl_evidence: vector('real-azure-cvm/hcl_report.bin').toString('base64') })), '--json');
    expect(JSON.parse(combined.out)).toEqual(j);
  });

  it('verifies: claims binding, then the embedded report against its VCEK chain', async () => {
    const r = await run('report', 'verify', hclPath, '--certs', certs, '--at', '2025-06-01T00:00:00Z');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^OK: HCL runtime claims \(1110 bytes\) bound by REPORT_DATA, VMPL 0; report signed by VCEK of chip .* \(Milan\)/);
  });

  it('fails at hcl-claims-binding when one claims byte changes', async () => {
    const b = Buffer.from(vector('real-azure-cvm/hcl_report.bin'));
    // A byte inside a JSON string value keeps the claims parseable: only the binding breaks.
    const at = b.indexOf('911B0EF8', HCL_CLAIMS_OFFSET, 'latin1');
    expect(at).toBeGreaterThan(HCL_CLAIMS_OFFSET);
    b[at] = '8'.charCodeAt(0);
    const r = await run('report', 'verify', write('changed-claims.bin', b), '--certs', certs, '--at', '2025-06-01T00:00:00Z');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at hcl-claims-binding: /);
  });

  it('fails at the report signature when one byte of the embedded report changes', async () => {
    const b = Buffer.from(vector('real-azure-cvm/hcl_report.bin'));
    b[32 + 0x90] ^= 0x01; // a MEASUREMENT byte of the embedded report
    const r = await run('report', 'verify', write('changed-report.bin', b), '--certs', certs, '--at', '2025-06-01T00:00:00Z');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at report-signature/);
  });

  it('refuses a truncated HCL report at hcl-format', async () => {
    const r = await run('report', 'verify', write('short.bin', vector('real-azure-cvm/hcl_report.bin').subarray(0, 1300)), '--certs', certs);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at hcl-format: HCL report: truncated/);
  });
});
