/**
 * `skr report decode|verify` on Intel TDX evidence (issue 22; issue 19 item 5): the real TD quote and HCL
 * reports of ../shared/vectors/real-azure-tdx, raw and in the JSON shapes users hold (IMDS answer, trustee's
 * evidence documents). A TD quote is recognised (never "an SEV-SNP report is 1184 bytes, got 5006"); verify
 * names each step, says TCB status was not checked, and refuses one flipped bit at its step.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HCL_CLAIMS_OFFSET } from '../../src/cvm/hcl';
import { runCli as run } from '../helpers/cli';
import { describeVectorFolder, vector, vectorPath } from '../helpers/vectors';

const AT = ['--at', '2025-06-01T00:00:00Z'];

describeVectorFolder('real-azure-tdx', 'skr report decode/verify on real Azure TDX evidence', () => {
  const quotePath = vectorPath('real-azure-tdx/trustee-td-quote.bin');
  const hclPath = vectorPath('real-azure-tdx/trustee-hcl-report.bin');
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cli-tdx-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const write = (name: string, data: string | Buffer) => {
    const p = path.join(tmp, name);
    fs.writeFileSync(p, data);
    return p;
  };

  it('decodes a TD quote as one (issue 19 item 5), raw and as the IMDS answer', async () => {
    const r = await run('report', 'decode', quotePath);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).not.toMatch(/1184 bytes/);
    expect(r.out).toMatch(/^Intel TDX quote v4 \(TEE type 0x81, attestation key type 2 = ECDSA P-256, TD report body 1.0\)/);
    expect(r.out).toMatch(/^ {2}mr_td +024a32b0\w+1ba7ab7b$/m);
    expect(r.out).toMatch(/qe_vendor_id +939a7233f79c4ca9940a0db3957f0607 \(Intel\)/);
    expect(r.out).toMatch(/pck_chain +3 PEM certificates/);
    const imds = write('imds.json', JSON.stringify({ quote: vector('real-azure-tdx/trustee-td-quote.bin').toString('base64url') }));
    const j = await run('report', 'decode', imds, '--json');
    expect(j.code).toBe(0);
    expect(JSON.parse(j.out).td_quote.body.mr_td).toMatch(/^024a32b0/);
  });

  it('decodes a TDX HCL report: header, TDREPORT fields, claims', async () => {
    const r = await run('report', 'decode', hclPath);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/report type 4 \(TDX\), hash type 1, claims 1201 bytes/);
    expect(r.out).toMatch(/tee_info_hash +\w+ \(matches sha384\(TDINFO\)\)/);
    expect(r.out).toMatch(/^ {2}mr_td +024a32b0/m);
    expect(r.out).toContain('"vmUniqueId": "6332533D-5649-4D02-8AA7-8F64B7C3EE21"');
  });

  it("decodes trustee's evidence documents (v0 byte arrays, v1 base64url) to both parts", async () => {
    for (const f of ['trustee-evidence-v0.json', 'trustee-evidence-v1.json']) {
      const r = await run('report', 'decode', vectorPath(`real-azure-tdx/${f}`), '--json');
      expect(r.code).toBe(0);
      const j = JSON.parse(r.out) as { td_quote: { header: { version: number } }; hcl_report: { varData: { reportType: number } } };
      expect(j.td_quote.header.version).toBe(4);
      expect(j.hcl_report.varData.reportType).toBe(4);
    }
  });

  it('verifies a TD quote alone and says TCB status was not checked', async () => {
    const r = await run('report', 'verify', quotePath, ...AT);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^OK: TD quote v4 signed by its attestation key, .*chained to Intel SGX Root CA \(sha256 44a0196b2b99f889…\)/);
    expect(r.out).toMatch(/TCB status NOT checked \(needs Intel PCS collateral: .*; FMSPC [0-9a-f]{12}: https:\/\/api\.trustedservices\.intel\.com\/tdx\/certification\/v4\/tcb\?fmspc=[0-9a-f]{12}\)/);
  });

  it('verifies the HCL report through its quote (--td-quote, or both in one evidence document)', async () => {
    const r = await run('report', 'verify', hclPath, '--td-quote', quotePath, ...AT);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^OK: HCL runtime claims \(1201 bytes\) bound by REPORTDATA, TDREPORT hashes consistent, TDREPORT = the quote's TD report body; TD quote v4/);
    const doc = await run('report', 'verify', vectorPath('real-azure-tdx/trustee-evidence-v1.json'), ...AT);
    expect(doc.code).toBe(0);
    expect(doc.out).toMatch(/^OK: HCL runtime claims/);
  });

  it('refuses one flipped bit at its step', async () => {
    const q = Buffer.from(vector('real-azure-tdx/trustee-td-quote.bin'));
    q[48 + 136] ^= 1; // MRTD, inside the signed 632 bytes
    const r = await run('report', 'verify', write('flipped-quote.bin', q), ...AT);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at td-quote-signature: /);

    const h = Buffer.from(vector('real-azure-tdx/trustee-hcl-report.bin'));
    h[h.indexOf('6332533D', HCL_CLAIMS_OFFSET, 'latin1')] ^= 1;
    const c = await run('report', 'verify', write('flipped-claims.bin', h), '--td-quote', quotePath, ...AT);
    expect(c.code).toBe(1);
    expect(c.err).toMatch(/^FAILED at hcl-claims-binding: /);

    // The other VM's HCL report with this VM's quote: the TDREPORT is not the quoted one.
    const k = await run('report', 'verify', vectorPath('real-azure-tdx/kinvolk-hcl-report-tdx.bin'), '--td-quote', quotePath, ...AT);
    expect(k.code).toBe(1);
    expect(k.err).toMatch(/^FAILED at td-report-binding: /);
  });

  it('asks for the quote when given a TDX HCL report alone', async () => {
    const r = await run('report', 'verify', hclPath, ...AT);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--td-quote FILE/);
  });
});
