import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VerificationError } from '../../src/common/errors';
import { parseReport } from '../../src/snp/report';
import { AMD_ARK_SHA256, certFingerprint256, TrustStore } from '../../src/certs/roots';
import { decodeHostAmdCert, parseThimCertificates, thimToChain } from '../../src/certs/thim';
import { derToPem, splitPem } from '../../src/certs/pem';
import { verifyAmdChain, verifyReport, verifyReportSignature } from '../../src/certs/verify';
import type { AmdCertChain } from '../../src/certs/types';
import { describeVectors, vector } from '../helpers/vectors';
import { chainOf, makeVcek, signedReport, testHierarchy } from './fixtures';
import { certificatesFromPem } from '../../src/asn1/certificate';

function stepOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof VerificationError) return e.step;
    throw e;
  }
  throw new Error('expected a VerificationError');
}

const amd = new TrustStore();

describeVectors('real vectors', () => {
  const milanChain = () => thimToChain(parseThimCertificates(vector('real-milan/thim_certs.json').toString('utf8')), 'test');
  const goSevChain = (): AmdCertChain => ({
    vcekPem: derToPem(vector('real-go-sev-guest/vcek.testcer')),
    chainPem: vector('real-go-sev-guest/milan.testcer').toString('utf8'),
    tcbm: 0n,
    source: 'test',
  });

  it('verifies the real Milan report with its THIM chain', () => {
    const r = verifyReport(vector('real-milan/snp_report.bin'), milanChain(), amd);
    expect(r.product).toBe('Milan');
    expect(r.vcekTcb).toBe(0x7308000000000003n);
    expect(r.chain.arkLabel).toBe('AMD Milan ARK');
    expect(r.chain.arkSha256).toBe(AMD_ARK_SHA256.Milan);
  });

  it("refuses the real Milan report with the other chip's chain", () => {
    const other = decodeHostAmdCert(vector('real-milan/other_chip_host-amd-cert-base64').toString('utf8'));
    const chain = thimToChain(other, 'test');
    expect(chain.tcbm).toBe(0x7308000000000003n); // same TCB, so only chip identity can tell them apart
    expect(verifyAmdChain(chain, amd).arkLabel).toBe('AMD Milan ARK');
    // The hwid check runs first (documented order) and names the mismatch...
    expect(stepOf(() => verifyReport(vector('real-milan/snp_report.bin'), chain, amd))).toBe('vcek-hwid');
    // ...and the signature itself does not verify with that chip's VCEK, while it does with the right one.
    const report = parseReport(vector('real-milan/snp_report.bin'));
    const otherVcek = certificatesFromPem(chain.vcekPem)[0];
    expect(stepOf(() => verifyReportSignature(report, otherVcek))).toBe('report-signature');
    expect(() => verifyReportSignature(report, certificatesFromPem(milanChain().vcekPem)[0])).not.toThrow();
  });

  it('verifies the go-sev-guest report with its DER VCEK + KDS chain, and not with the Milan THIM chain', () => {
    const r = verifyReport(vector('real-go-sev-guest/attestation.bin'), goSevChain(), amd);
    expect(r.vcekTcb).toBe(parseReport(vector('real-go-sev-guest/attestation.bin')).reportedTcb);
    expect(() => verifyReport(vector('real-go-sev-guest/attestation.bin'), milanChain(), amd)).toThrow(VerificationError);
  });

  it('fails at report-signature when one signed byte flips', () => {
    const report = Buffer.from(vector('real-milan/snp_report.bin'));
    report[0x50] ^= 1; // REPORT_DATA
    expect(stepOf(() => verifyReport(report, milanChain(), amd))).toBe('report-signature');
  });

  it('checks signature-algo before the signature', () => {
    const report = Buffer.from(vector('real-milan/snp_report.bin'));
    report.writeUInt32LE(2, 0x34);
    expect(stepOf(() => verifyReport(report, milanChain(), amd))).toBe('signature-algo');
  });

  it('names both TCBs at vcek-tcb', () => {
    const report = Buffer.from(vector('real-milan/snp_report.bin'));
    report.writeBigUInt64LE(0x7308000000000004n, 0x180);
    expect(() => verifyReport(report, milanChain(), amd)).toThrow(/7308000000000003.*7308000000000004/);
  });

  it('rejects a chain whose ASK is not the VCEK issuer (ask-signs-vcek) and a shuffled chain', () => {
    const c = milanChain();
    const [ask, ark] = splitPem(c.chainPem);
    const genoa = splitPem(vector('amd-roots/ask_ark_genoa.pem').toString('utf8'));
    expect(stepOf(() => verifyAmdChain({ ...c, chainPem: genoa[0] + ark }, amd))).toBe('ark-signs-ask');
    expect(stepOf(() => verifyAmdChain({ ...c, chainPem: genoa.join('') }, amd))).toBe('ask-signs-vcek');
    expect(stepOf(() => verifyAmdChain({ ...c, chainPem: ark + ask }, amd))).toBe('ark-pinned');
    expect(stepOf(() => verifyAmdChain({ ...c, chainPem: ask }, amd))).toBe('chain-format');
  });

  it('checks validity dates against the given clock (real VCEK expires 2029-11-29)', () => {
    expect(stepOf(() => verifyAmdChain(milanChain(), amd, { now: new Date('2030-01-01T00:00:00Z') }))).toBe('cert-expired');
    expect(stepOf(() => verifyAmdChain(milanChain(), amd, { now: new Date('2022-01-01T00:00:00Z') }))).toBe('cert-expired');
    expect(verifyAmdChain(milanChain(), amd, { now: new Date('2029-11-28T00:00:00Z') }).vcekExtensions.productName).toBe('Milan-B0');
  });

  it('pins ARK fingerprints that match the KDS files, VCEK and VLEK alike', () => {
    for (const [product, file] of [['Milan', 'milan'], ['Genoa', 'genoa'], ['Turin', 'turin_vcek']] as const) {
      const ark = certificatesFromPem(splitPem(vector(`amd-roots/ask_ark_${file}.pem`).toString('utf8'))[1])[0];
      expect(certFingerprint256(ark)).toBe(AMD_ARK_SHA256[product]);
      expect(amd.amdProductOf(ark)).toBe(product);
    }
    for (const file of ['milan_vlek', 'genoa_vlek', 'turin_vlek']) {
      const ark = certificatesFromPem(splitPem(vector(`amd-roots/ask_ark_${file}.pem`).toString('utf8'))[1])[0];
      expect(amd.isTrustedArk(ark)).toBe(true);
    }
  });
});

describe('self-made hierarchies', () => {
  const h = testHierarchy();
  const tcb = 0x7308000000000003n;
  const chipId = Buffer.alloc(64, 0xab);
  const vcek = makeVcek(h, { tcb, hwid: chipId });
  const report = signedReport(vcek.key, { version: 2, reportedTcb: tcb, chipId, reportData: Buffer.alloc(64, 1) });

  it('refuses an unpinned ARK even though the chain is internally valid', () => {
    const err = (() => {
      try {
        verifyReport(report, chainOf(h, vcek, tcb), amd);
      } catch (e) {
        return e as VerificationError;
      }
    })();
    expect(err?.step).toBe('ark-pinned');
    expect(err?.message).toContain(certFingerprint256(h.arkDer));
    expect(err?.status).toBe(403);
  });

  it('refuses an unpinned self-signed RSA-PSS root made with the openssl CLI', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-ark-'));
    try {
      const key = path.join(dir, 'k.pem');
      const crt = path.join(dir, 'c.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', crt, '-days', '30',
        '-subj', '/CN=ARK-Milan', '-sha384', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:48'], { stdio: 'ignore' });
      const fake = fs.readFileSync(crt, 'utf8');
      expect(stepOf(() => verifyAmdChain({ vcekPem: vcek.pem, chainPem: h.askPem + fake, tcbm: tcb, source: 't' }, amd))).toBe('ark-pinned');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('verifies end to end when the test ARK is configured as an extra root', () => {
    const trust = new TrustStore({ extraRootsPem: [h.arkPem] });
    const r = verifyReport(report, chainOf(h, vcek, tcb), trust);
    expect(r.vcekTcb).toBe(tcb);
    expect(r.chain.arkLabel).toMatch(/extra root.*ARK-Test/);
  });

  it('checks hwid unless the chip id is masked', () => {
    const trust = new TrustStore({ extraRootsPem: [h.arkPem] });
    const otherChip = Buffer.alloc(64, 0xcd);
    const wrong = signedReport(vcek.key, { version: 2, reportedTcb: tcb, chipId: otherChip });
    expect(stepOf(() => verifyReport(wrong, chainOf(h, vcek, tcb), trust))).toBe('vcek-hwid');
    const masked = signedReport(vcek.key, { version: 2, reportedTcb: tcb, chipId: otherChip, signerInfo: 2 });
    expect(verifyReport(masked, chainOf(h, vcek, tcb), trust).vcekTcb).toBe(tcb);
    const zero = signedReport(vcek.key, { version: 2, reportedTcb: tcb, chipId: Buffer.alloc(64) });
    expect(verifyReport(zero, chainOf(h, vcek, tcb), trust).vcekTcb).toBe(tcb);
  });

  it('verifies a Turin VCEK with an 8-byte hwid and FMC SPL', () => {
    const trust = new TrustStore({ extraRootsPem: [h.arkPem] });
    const turinTcb = 0x4800000018040201n;
    const turinChip = Buffer.concat([Buffer.from('0102030405060708', 'hex'), Buffer.alloc(56)]);
    const tv = makeVcek(h, { product: 'Turin', tcb: turinTcb, hwid: turinChip.subarray(0, 8) });
    const rep = signedReport(tv.key, { version: 3, cpuidFamId: 0x1a, cpuidModId: 0x02, reportedTcb: turinTcb, chipId: turinChip });
    const r = verifyReport(rep, chainOf(h, tv, turinTcb), trust);
    expect(r.product).toBe('Turin');
    expect(r.vcekTcb).toBe(turinTcb);
  });

  it('reports an expired VCEK at cert-expired after the signatures', () => {
    const trust = new TrustStore({ extraRootsPem: [h.arkPem] });
    const old = makeVcek(h, { tcb, hwid: chipId, notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
    expect(stepOf(() => verifyAmdChain(chainOf(h, old, tcb), trust))).toBe('cert-expired');
  });

  it('refuses extra roots that hold no certificate', () => {
    expect(() => new TrustStore({ extraRootsPem: ['not a pem'] })).toThrow(/no PEM certificate/);
  });
});
