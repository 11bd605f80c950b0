import { execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, KeyObject, verify } from 'node:crypto';
import { decodeOid, decodeUnsignedInt, DerNode, parseDer, Tag } from '../../src/asn1/der';
import { dersOfPem } from '../../src/asn1/x509';
import { parseReport, reportDataFor, reportToJson, SIGNATURE_OFFSET, SIGNED_LENGTH } from '../../src/snp/report';
import { encodeTcb } from '../../src/snp/tcb';
import {
  CERT_TABLE_GUID,
  DEFAULT_SECURITY_POLICY_BASE64,
  DEFAULT_SECURITY_POLICY_REGO,
  mintAmdRoots,
  SimulatedPlatform,
  TEST_ONLY_ROOTS,
  vcekExtensions,
  VCEK_OID,
} from '../../src/snp/simulator';
import { TEST_ONLY_ARK_KEY_PEM, TEST_ONLY_ASK_KEY_PEM } from '../../src/snp/simulator/test-only-keys';
import { SimulatedSource } from '../../src/snp/sources/simulated';
import { describeVectors, vector } from '../helpers/vectors';
import { certificateFromDer, certificatesFromPem } from '../../src/asn1/certificate';

/** Verify a report's signature the way a relying party does: r, s little-endian at 0x2A0. */
function reportSignatureOk(report: Buffer, vcekPublicKey: KeyObject): boolean {
  const r = Buffer.from(report.subarray(SIGNATURE_OFFSET, SIGNATURE_OFFSET + 48)).reverse();
  const s = Buffer.from(report.subarray(SIGNATURE_OFFSET + 72, SIGNATURE_OFFSET + 120)).reverse();
  return verify('sha384', report.subarray(0, SIGNED_LENGTH), { key: vcekPublicKey, dsaEncoding: 'ieee-p1363' }, Buffer.concat([r, s]));
}

/** Map OID → extnValue contents of a certificate's extensions, read with our DER reader. */
function extensionsOf(certDer: Buffer): Map<string, Buffer> {
  const tbs = parseDer(certDer).children![0];
  const ctx3 = tbs.children!.find((c) => c.tag === 0xa3);
  const out = new Map<string, Buffer>();
  for (const ext of ctx3?.children![0].children ?? []) {
    const kids = ext.children as DerNode[];
    out.set(decodeOid(kids[0].value), kids[kids.length - 1].value);
  }
  return out;
}

function intExt(exts: Map<string, Buffer>, oid: string): number {
  const node = parseDer(exts.get(oid)!);
  expect(node.tag).toBe(Tag.INTEGER);
  return Number(decodeUnsignedInt(node.value));
}

function tbsOf(certDer: Buffer): Buffer {
  return parseDer(certDer).children![0].raw;
}

const rd = reportDataFor(Buffer.from('runtime data'));

describe('SimulatedPlatform (Milan defaults)', () => {
  const p = new SimulatedPlatform();

  it('signs reports that verify with the VCEK, and only with it', async () => {
    const { report } = await p.evidenceSource().getReport({ reportData: rd });
    expect(reportSignatureOk(report, p.vcekPublicKey)).toBe(true);
    expect(reportSignatureOk(report, certificateFromDer(p.vcekDer).publicKey)).toBe(true);
    const tampered = Buffer.from(report);
    tampered[0x50] ^= 1;
    expect(reportSignatureOk(tampered, p.vcekPublicKey)).toBe(false);
    // Only the low 48 bytes of each 72-byte component are used; the rest and the tail are zero.
    expect(report.subarray(SIGNATURE_OFFSET + 48, SIGNATURE_OFFSET + 72).equals(Buffer.alloc(24))).toBe(true);
    expect(report.subarray(SIGNATURE_OFFSET + 144).equals(Buffer.alloc(report.length - SIGNATURE_OFFSET - 144))).toBe(true);
  });

  it('fills the report like hardware', async () => {
    const src = p.evidenceSource();
    expect(src.kind).toBe('simulated');
    expect(src.description).toBe('simulated SEV-SNP platform (test AMD chain)');
    const r = parseReport((await src.getReport({ reportData: rd, vmpl: 2 })).report);
    expect(r.version).toBe(3);
    expect(r.vmpl).toBe(2);
    expect(r.reportData).toEqual(rd);
    expect(r.policy).toBe(0x3001fn);
    expect(r.signatureAlgo).toBe(1);
    expect(r.reportedTcb).toBe(0x7308000000000003n);
    for (const t of [r.currentTcb, r.committedTcb, r.launchTcb]) expect(t).toBe(0x7308000000000003n);
    expect(r.chipId).toEqual(p.chipId);
    expect(r.measurement).toEqual(p.measurement);
    expect(r.reportIdMa).toEqual(Buffer.alloc(32, 0xff));
    expect(reportToJson(r).product).toBe('Milan');
    // REPORT_ID is per platform: stable across reports, different on another platform.
    const again = parseReport((await src.getReport({ reportData: rd })).report);
    expect(again.reportId).toEqual(r.reportId);
    expect(again.reportId.equals(Buffer.alloc(32))).toBe(false);
    expect(new SimulatedPlatform().reportId.equals(r.reportId)).toBe(false);
  });

  it('binds HOST_DATA to sha256 of the decoded security policy', async () => {
    expect(p.securityPolicyBase64).toBe(DEFAULT_SECURITY_POLICY_BASE64);
    const expected = createHash('sha256').update(DEFAULT_SECURITY_POLICY_REGO).digest();
    expect(p.hostData).toEqual(expected);
    expect(parseReport((await p.evidenceSource().getReport({ reportData: rd })).report).hostData).toEqual(expected);
    const other = new SimulatedPlatform({ securityPolicyBase64: Buffer.from('package policy\n').toString('base64') });
    expect(other.hostData).toEqual(createHash('sha256').update('package policy\n').digest());
    expect(() => new SimulatedPlatform({ securityPolicyBase64: 'not base64!' })).toThrow(expect.objectContaining({ code: 'ERR_SIMULATOR_OPTION' }));
  });

  it('chains VCEK → ASK → ARK (self-signed) with RSA-PSS', () => {
    const vcek = certificateFromDer(p.vcekDer);
    const ask = certificateFromDer(p.askDer);
    const ark = certificateFromDer(p.arkDer);
    expect(vcek.verify(ask.publicKey)).toBe(true);
    expect(ask.verify(ark.publicKey)).toBe(true);
    expect(ark.verify(ark.publicKey)).toBe(true);
    expect(vcek.verify(ark.publicKey)).toBe(false);
    expect(vcek.checkIssued(ask) && ask.checkIssued(ark)).toBe(true);
    expect(vcek.subject).toContain('CN=SEV-VCEK');
    expect(ask.subject).toContain('CN=SEV-Milan');
    expect(ark.subject).toContain('CN=ARK-Milan');
    for (const c of [vcek, ask, ark]) expect(c.subject).toContain('O=skr-sidecar SIMULATED (test only)');
    expect(vcek.serialNumber).toBe('0');
    expect(ark.ca && ask.ca && !vcek.ca).toBe(true);
    expect(vcek.publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    expect(ark.publicKey.asymmetricKeyDetails?.modulusLength).toBe(4096);
    expect(p.arkFingerprint).toBe(createHash('sha256').update(p.arkDer).digest('hex'));
    expect(p.arkFingerprint).toBe(TEST_ONLY_ROOTS.Milan.arkFingerprint);
  });

  it('writes the AMD VCEK extensions for its TCB and chip id', () => {
    const exts = extensionsOf(p.vcekDer);
    expect(intExt(exts, VCEK_OID.structVersion)).toBe(0);
    expect(parseDer(exts.get(VCEK_OID.productName)!)).toMatchObject({ tag: Tag.IA5_STRING, value: Buffer.from('Milan-B0') });
    expect(intExt(exts, VCEK_OID.blSpl)).toBe(3);
    expect(intExt(exts, VCEK_OID.teeSpl)).toBe(0);
    expect(intExt(exts, VCEK_OID.snpSpl)).toBe(8);
    expect(intExt(exts, VCEK_OID.ucodeSpl)).toBe(0x73);
    for (const o of [VCEK_OID.spl4, VCEK_OID.spl5, VCEK_OID.spl6, VCEK_OID.spl7]) expect(intExt(exts, o)).toBe(0);
    expect(exts.has(VCEK_OID.fmcSpl)).toBe(false);
    expect(exts.get(VCEK_OID.hwid)).toEqual(p.chipId);
  });

  it('returns the certificate table of an extended report and the THIM JSON', async () => {
    const ev = await p.evidenceSource().getReport({ reportData: rd, extended: true });
    expect(ev.certTable?.map((e) => [e.kind, e.guid])).toEqual([
      ['vcek', CERT_TABLE_GUID.vcek],
      ['ask', CERT_TABLE_GUID.ask],
      ['ark', CERT_TABLE_GUID.ark],
    ]);
    expect(ev.certTable![0].data).toEqual(p.vcekDer);
    expect(ev.certTable![2].data).toEqual(p.arkDer);
    expect((await p.evidenceSource().getReport({ reportData: rd })).certTable).toBeUndefined();
    const thim = p.thimCertificates();
    expect(thim.tcbm).toBe('7308000000000003');
    expect(thim.cacheControl).toBe('86400');
    expect(dersOfPem(thim.vcekCert)).toEqual([p.vcekDer]);
    expect(dersOfPem(thim.certificateChain)).toEqual([p.askDer, p.arkDer]);
    expect(thim.vcekCert).toBe(p.vcekPem);
  });

  it('refuses bad requests with typed errors', async () => {
    const src = p.evidenceSource();
    await expect(src.getReport({ reportData: Buffer.alloc(32) })).rejects.toMatchObject({ code: 'ERR_REPORT_DATA' });
    await expect(src.getReport({ reportData: rd, vmpl: 4 })).rejects.toMatchObject({ code: 'ERR_VMPL' });
    expect(() => new SimulatedPlatform({ chipId: Buffer.alloc(63) })).toThrow(expect.objectContaining({ code: 'ERR_SIMULATOR_OPTION' }));
    expect(() => new SimulatedPlatform({ reportVersion: 1 })).toThrow(expect.objectContaining({ code: 'ERR_SIMULATOR_OPTION' }));
  });

  it('openssl reads the VCEK with its AMD extensions', () => {
    const text = execFileSync('openssl', ['x509', '-noout', '-text'], { input: p.vcekPem, encoding: 'utf8' });
    expect(text).toContain('1.3.6.1.4.1.3704.1.4');
    expect(text).toContain('Signature Algorithm: rsassaPss');
    expect(text).toContain('NIST CURVE: P-384');
  });
});

describe('SimulatedPlatform: chips, TCBs and products', () => {
  it('different chip ids give different VCEKs that do not verify each other\'s reports', () => {
    const a = new SimulatedPlatform({ chipId: Buffer.alloc(64, 0xaa) });
    const b = new SimulatedPlatform({ chipId: Buffer.alloc(64, 0xbb) });
    expect(a.vcekDer.equals(b.vcekDer)).toBe(false);
    expect(a.vcekPublicKey.export({ format: 'jwk' })).not.toEqual(b.vcekPublicKey.export({ format: 'jwk' }));
    expect(extensionsOf(a.vcekDer).get(VCEK_OID.hwid)).toEqual(Buffer.alloc(64, 0xaa));
    expect(extensionsOf(b.vcekDer).get(VCEK_OID.hwid)).toEqual(Buffer.alloc(64, 0xbb));
    const report = a.signReport({ reportData: rd });
    expect(reportSignatureOk(report, a.vcekPublicKey)).toBe(true);
    expect(reportSignatureOk(report, b.vcekPublicKey)).toBe(false);
    // Same chip on another platform instance: same VCEK key (derived, as on hardware).
    const a2 = new SimulatedPlatform({ chipId: Buffer.alloc(64, 0xaa) });
    expect(reportSignatureOk(report, a2.vcekPublicKey)).toBe(true);
  });

  it('signReport makes special reports, e.g. with another TCB', () => {
    const p = new SimulatedPlatform();
    const other = encodeTcb({ bootloader: 4, tee: 0, snp: 9, microcode: 0x74 });
    const r = parseReport(p.signReport({ reportedTcb: other, vmpl: 1 }));
    expect(r.reportedTcb).toBe(other);
    expect(r.currentTcb).toBe(0x7308000000000003n);
    expect(r.vmpl).toBe(1);
    expect(r.chipId).toEqual(p.chipId);
    expect(reportSignatureOk(r.raw, p.vcekPublicKey)).toBe(true);
  });

  it('vcekFor issues a certificate for another TCB; reissueVcek moves the platform to it', () => {
    const p = new SimulatedPlatform({ tcb: { bootloader: 3, tee: 0, snp: 8, microcode: 0x73 } });
    const newTcb = { bootloader: 4, tee: 1, snp: 0x16, microcode: 0xd1 };
    const stale = p.vcekFor(newTcb);
    expect(p.reportedTcb).toBe(0x7308000000000003n);
    expect(stale.tcb).toBe(0xd116000000000104n);
    const exts = extensionsOf(stale.der);
    expect(intExt(exts, VCEK_OID.snpSpl)).toBe(0x16);
    expect(intExt(exts, VCEK_OID.ucodeSpl)).toBe(0xd1);
    // 0xd1 is encoded as a positive DER INTEGER with a leading zero, like KDS does.
    expect(exts.get(VCEK_OID.ucodeSpl)).toEqual(Buffer.from('020200d1', 'hex'));

    const oldKey = p.vcekPublicKey;
    const issued = p.reissueVcek(newTcb);
    expect(p.reportedTcb).toBe(0xd116000000000104n);
    expect(p.thimCertificates().tcbm).toBe('d116000000000104');
    expect(p.vcekDer).toEqual(issued.der);
    const report = p.signReport();
    expect(parseReport(report).reportedTcb).toBe(0xd116000000000104n);
    expect(reportSignatureOk(report, issued.publicKey)).toBe(true);
    expect(reportSignatureOk(report, oldKey)).toBe(false);
    expect(certificateFromDer(issued.der).verify(createPublicKey(TEST_ONLY_ASK_KEY_PEM))).toBe(true);
  });

  it('Genoa: CPUID, names and product in the VCEK', () => {
    const p = new SimulatedPlatform({ product: 'Genoa' });
    const r = parseReport(p.signReport());
    expect(reportToJson(r).product).toBe('Genoa');
    expect(certificateFromDer(p.arkDer).subject).toContain('CN=ARK-Genoa');
    expect(certificateFromDer(p.askDer).subject).toContain('CN=SEV-Genoa');
    expect(parseDer(extensionsOf(p.vcekDer).get(VCEK_OID.productName)!).value.toString()).toBe('Genoa-B1');
    expect(p.arkFingerprint).toBe(TEST_ONLY_ROOTS.Genoa.arkFingerprint);
    expect(p.arkFingerprint).not.toBe(TEST_ONLY_ROOTS.Milan.arkFingerprint);
  });

  it('Turin: TCB layout, FMC SPL, struct version 1 and an 8-byte hwid', () => {
    const p = new SimulatedPlatform({ product: 'Turin', tcb: { fmc: 2, bootloader: 3, tee: 4, snp: 5, microcode: 0x60 } });
    expect(p.reportedTcb).toBe(0x6000000005040302n);
    expect(p.chipId.subarray(8)).toEqual(Buffer.alloc(56));
    const exts = extensionsOf(p.vcekDer);
    expect(intExt(exts, VCEK_OID.structVersion)).toBe(1);
    expect(intExt(exts, VCEK_OID.fmcSpl)).toBe(2);
    expect(intExt(exts, VCEK_OID.blSpl)).toBe(3);
    expect(intExt(exts, VCEK_OID.teeSpl)).toBe(4);
    expect(intExt(exts, VCEK_OID.snpSpl)).toBe(5);
    expect(intExt(exts, VCEK_OID.ucodeSpl)).toBe(0x60);
    expect(exts.get(VCEK_OID.hwid)).toEqual(p.chipId.subarray(0, 8));
    const r = parseReport(p.signReport());
    expect(reportToJson(r).product).toBe('Turin');
    expect(reportSignatureOk(r.raw, p.vcekPublicKey)).toBe(true);
  });

  it('version 2 reports carry no CPUID', () => {
    const r = parseReport(new SimulatedPlatform({ reportVersion: 2 }).signReport());
    expect(r.version).toBe(2);
    expect([r.cpuidFamId, r.cpuidModId, r.cpuidStep]).toEqual([0, 0, 0]);
  });

  it('accepts other keys: a fresh hierarchy and a fixed VCEK key', () => {
    const ark = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const vcek = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const p = new SimulatedPlatform({ keys: { ark, vcek: vcek.privateKey } });
    expect(p.arkFingerprint).not.toBe(TEST_ONLY_ROOTS.Milan.arkFingerprint);
    const arkCert = certificateFromDer(p.arkDer);
    expect(arkCert.verify(createPublicKey(ark))).toBe(true);
    expect(certificateFromDer(p.askDer).verify(arkCert.publicKey)).toBe(true);
    expect(certificateFromDer(p.vcekDer).verify(certificateFromDer(p.askDer).publicKey)).toBe(true);
    expect(reportSignatureOk(p.signReport(), vcek.publicKey)).toBe(true);
  });

  it('SimulatedSource wraps a platform or options', async () => {
    const p = new SimulatedPlatform();
    const shared = new SimulatedSource(p);
    expect(shared.platform).toBe(p);
    expect(shared.kind).toBe('simulated');
    const { report } = await shared.getReport({ reportData: rd });
    expect(reportSignatureOk(report, p.vcekPublicKey)).toBe(true);
    expect(new SimulatedSource({ product: 'Genoa' }).platform.product).toBe('Genoa');
  });
});

describe('committed TEST-ONLY roots', () => {
  it.each(['Milan', 'Genoa', 'Turin'] as const)('%s ARK/ASK match the committed keys and what mintAmdRoots produces', (product) => {
    const roots = TEST_ONLY_ROOTS[product];
    const [arkDer] = dersOfPem(roots.arkPem);
    const [askDer] = dersOfPem(roots.askPem);
    expect(createHash('sha256').update(arkDer).digest('hex')).toBe(roots.arkFingerprint);
    const arkPub = createPublicKey(TEST_ONLY_ARK_KEY_PEM);
    const ark = certificateFromDer(arkDer);
    const ask = certificateFromDer(askDer);
    expect(ark.publicKey.equals(arkPub)).toBe(true);
    expect(ask.publicKey.equals(createPublicKey(TEST_ONLY_ASK_KEY_PEM))).toBe(true);
    expect(ark.verify(arkPub)).toBe(true);
    expect(ask.verify(arkPub)).toBe(true);
    // Everything but the (randomised) PSS signature is what the builder makes today.
    const fresh = mintAmdRoots(product, createPrivateKey(TEST_ONLY_ARK_KEY_PEM), createPrivateKey(TEST_ONLY_ASK_KEY_PEM));
    expect(tbsOf(fresh.arkDer)).toEqual(tbsOf(arkDer));
    expect(tbsOf(fresh.askDer)).toEqual(tbsOf(askDer));
  });
});

describeVectors('simulator against real AMD encodings', () => {
  const thim = JSON.parse(vector('real-milan/thim_certs.json').toString()) as { vcekCert: string; certificateChain: string };
  const realReport = parseReport(vector('real-milan/snp_report.bin'));

  it('the report-signature convention is the one real hardware uses', () => {
    expect(reportSignatureOk(realReport.raw, certificatesFromPem(thim.vcekCert)[0].publicKey)).toBe(true);
  });

  it('VCEK extensions are byte-identical to a real KDS VCEK for the same TCB and chip', () => {
    const [realVcek] = dersOfPem(thim.vcekCert);
    const realExts = parseDer(realVcek).children![0].children!.find((c) => c.tag === 0xa3)!.children![0].raw;
    const ours = vcekExtensions('Milan', realReport.reportedTcb, realReport.chipId);
    const p = new SimulatedPlatform({ chipId: realReport.chipId, tcb: realReport.reportedTcb });
    const simExts = parseDer(p.vcekDer).children![0].children!.find((c) => c.tag === 0xa3)!.children![0].raw;
    expect(simExts).toEqual(realExts);
    expect(ours.map((e) => e.oid)).toEqual([...extensionsOf(realVcek).keys()]);
  });

  it('VCEK extensions match go-sev-guest\'s real VCEK too', () => {
    const realVcek = vector('real-go-sev-guest/vcek.testcer');
    const report = parseReport(vector('real-go-sev-guest/attestation.bin'));
    const p = new SimulatedPlatform({ chipId: report.chipId, tcb: report.reportedTcb });
    const ext = (d: Buffer) => parseDer(d).children![0].children!.find((c) => c.tag === 0xa3)!.raw;
    expect(ext(p.vcekDer)).toEqual(ext(realVcek));
  });

  it('ARK/ASK certificate shapes follow AMD\'s (same extension OIDs and criticality)', () => {
    const [realAsk, realArk] = dersOfPem(thim.certificateChain);
    const p = new SimulatedPlatform();
    const shape = (d: Buffer) =>
      parseDer(d).children![0].children!.find((c) => c.tag === 0xa3)!.children![0].children!.map((e) => [decodeOid(e.children![0].value), e.children!.length === 3]);
    const withoutCrlDp = (s: (string | boolean)[][]) => s.filter(([oid]) => oid !== '2.5.29.31');
    expect(shape(p.arkDer)).toEqual(withoutCrlDp(shape(realArk)));
    expect(shape(p.askDer)).toEqual(withoutCrlDp(shape(realAsk)));
  });
});
