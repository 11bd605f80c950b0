/** HCL report decode and verify: the real Azure CVM vector, and synthetic bad input. */
import { generateKeyPairSync } from 'node:crypto';
import { TrustStore } from '../../src/certs/roots';
import type { AmdCertChain } from '../../src/certs/types';
import { InvalidInputError } from '../../src/common/errors';
import {
  buildHclReport,
  claimsKey,
  claimsUserData,
  hclReportData,
  hclToJson,
  isHclReport,
  parseHclReport,
  verifyHclReport,
} from '../../src/cvm/hcl';
import { SimulatedPlatform } from '../../src/snp/simulator';
import { stepOf } from '../helpers/errors';
import { describeVectors, vector } from '../helpers/vectors';
import { pemCertificatesToDer, derToPem } from '../../src/certs/pem';

function chainOfBundle(pem: string): AmdCertChain {
  const [vcek, ...rest] = pemCertificatesToDer(pem, 'bundle');
  return { vcekPem: derToPem(vcek), chainPem: rest.map(derToPem).join(''), tcbm: 0n, source: 'test' };
}

describeVectors('HCL report: real Azure CVM vector', () => {
  const raw = vector('real-azure-cvm/hcl_report.bin');
  const chain = chainOfBundle(vector('real-azure-cvm/vcek_ask_ark.pem').toString('utf8'));
  const trust = new TrustStore();

  it('decodes the header, the embedded report and the runtime claims', () => {
    expect(isHclReport(raw)).toBe(true);
    const hcl = parseHclReport(raw);
    expect(hcl.header).toEqual({ version: 1, reportSize: 2346, requestType: 2, status: 0 });
    expect(hcl.varData).toEqual({ dataSize: 1130, version: 1, reportType: 2, hashType: 1, claimsSize: 1110 });
    expect(hcl.report.version).toBe(2);
    expect(hcl.report.vmpl).toBe(0);
    expect(hcl.report.policy).toBe(0x3001fn);
    expect(hcl.report.reportedTcb).toBe(0x7308000000000003n);
    expect(claimsKey(hcl.claims, 'HCLAkPub')?.key_ops).toEqual(['sign']);
    expect(claimsKey(hcl.claims, 'HCLEkPub')?.key_ops).toEqual(['encrypt']);
    expect((hcl.claims['vm-configuration'] as Record<string, unknown>).vmUniqueId).toBe('911B0EF8-9DBA-48B0-B275-4E4DF2D39252');
    expect(claimsUserData(hcl.claims)).toBe('0'.repeat(128));
    const json = hclToJson(hcl);
    expect(json.header.signature).toBe('HCLA');
    expect(json.report.reportData.slice(64)).toBe('0'.repeat(64));
  });

  it('verifies: claims binding, VMPL 0, Milan chain and report signature', () => {
    const v = verifyHclReport(raw, chain, trust);
    expect(v.verified.product).toBe('Milan');
    expect(v.verified.chain.arkLabel).toMatch(/Milan/);
  });

  it('fails at hcl-claims-binding with one claims byte changed', () => {
    const t = Buffer.from(raw);
    const at = 1236 + 1000; // inside the vmUniqueId / user-data text
    t[at] = t[at] === 0x30 ? 0x31 : 0x30;
    expect(stepOf(() => verifyHclReport(t, chain, trust))).toBe('hcl-claims-binding');
  });

  it('fails at report-signature with one embedded-report byte changed (claims untouched)', () => {
    const t = Buffer.from(raw);
    t[32 + 0x90] ^= 1; // MEASUREMENT
    expect(stepOf(() => verifyHclReport(t, chain, trust))).toBe('report-signature');
  });
});

describe('HCL report: synthetic bad input', () => {
  const platform = new SimulatedPlatform({ reportVersion: 2 });
  const trust = new TrustStore({ extraRootsPem: [platform.arkPem] });
  const chain: AmdCertChain = { vcekPem: platform.vcekPem, chainPem: platform.askPem + platform.arkPem, tcbm: platform.reportedTcb, source: 'test' };
  const ak = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
  const claims = Buffer.from(JSON.stringify({ keys: [{ kid: 'HCLAkPub', key_ops: ['sign'], kty: 'RSA', e: ak.e, n: ak.n }], 'vm-configuration': { 'secure-boot': true }, 'user-data': 'AB'.repeat(64) }));

  function make(o: { vmpl?: number; reportDataClaims?: Buffer; padTo?: number } = {}): Buffer {
    const snpReport = platform.signReport({ reportData: hclReportData(o.reportDataClaims ?? claims), vmpl: o.vmpl ?? 0 });
    return buildHclReport({ snpReport, claimsBytes: claims, padTo: o.padTo ?? 2048 });
  }
  const errOf = (b: Buffer) => {
    try {
      parseHclReport(b);
    } catch (e) {
      expect(e).toBeInstanceOf(InvalidInputError);
      expect((e as InvalidInputError).code).toBe('ERR_HCL_REPORT');
      return (e as Error).message;
    }
    throw new Error('parsed');
  };

  it('a well-formed simulated report verifies', () => {
    expect(verifyHclReport(make(), chain, trust).hcl.claimsBytes.equals(claims)).toBe(true);
  });
  it('truncated NV content: inside the fixed part, and inside the claims', () => {
    expect(errOf(make().subarray(0, 1000))).toMatch(/truncated: 1000 bytes/);
    expect(errOf(make().subarray(0, 1236 + claims.length - 1))).toMatch(/truncated: claims size/);
  });
  it('oversized NV content', () => {
    expect(errOf(make({ padTo: 9000 }))).toMatch(/9000 bytes is more than/);
  });
  it('wrong header, wrong report type, inconsistent sizes, claims that are not JSON', () => {
    const b = make();
    b.write('HCLB', 0, 'latin1');
    expect(errOf(b)).toMatch(/does not start with "HCLA"/);
    const tdx = make();
    tdx.writeUInt32LE(4, 1224);
    expect(errOf(tdx)).toMatch(/TDX/);
    const sz = make();
    sz.writeUInt32LE(21, 1216);
    expect(errOf(sz)).toMatch(/variable-data size 21/);
    const nj = make();
    nj[1236] = 0x5b; // '[' → not an object / not JSON
    expect(errOf(nj)).toMatch(/runtime claims are not/);
  });
  it('claims that do not hash to REPORT_DATA fail at hcl-claims-binding', () => {
    expect(stepOf(() => verifyHclReport(make({ reportDataClaims: Buffer.from('{}') }), chain, trust))).toBe('hcl-claims-binding');
  });
  it('VMPL ≠ 0 fails at hcl-vmpl (the report is otherwise genuine)', () => {
    expect(stepOf(() => verifyHclReport(make({ vmpl: 2 }), chain, trust))).toBe('hcl-vmpl');
  });
});
