import { createHash } from 'node:crypto';
import { CborMap, CborTag, CborValue, decodeCbor, encodeCbor } from '../../src/cose/cbor';
import { CoseAlg, parseSign1, signSign1 } from '../../src/cose/sign1';
import {
  didX509For,
  issueUvmEndorsement,
  MICROSOFT_UVM_ROOT_SHA256,
  normaliseFingerprint,
  parseDidX509,
  parseUvmEndorsement,
  verifyUvmEndorsement,
  VerifyUvmOptions,
} from '../../src/cose/uvm-endorsement';
import { parseReport } from '../../src/snp/report';
import { describeVectors, vector } from '../helpers/vectors';
import { caExts, issue, leafExts, makeChain, TestCert } from './signer-chain';
import { stepOf } from '../helpers/errors';
import { certificateFromDer } from '../../src/asn1/certificate';

const MEASUREMENT = '51068107cdc7ee3d89c7821b05bca6147eb77b2005ae759050fc049b65a1b0beabc65a9d857acecf23225f5ec76849f5';
const OTHER_MEASUREMENT = '03fea02823189b25d0623a5c81f97c8ba4d2fbc48c914a55ce525f90454ddcec303743dac2fc013f0846912d1412f6df';
/** From PROTOCOLS §4b, in its colon-separated form. */
const MS_ROOT_COLONS = '23:FF:E2:B8:BD:B9:A1:71:15:15:D4:CF:FD:A0:4B:C7:F7:93:D5:13:C7:6C:24:3F:10:20:50:7D:86:69:B7:DB';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');


describeVectors('UVM endorsement: real vectors', () => {
  const cose = (): Buffer => vector('real-milan/uvm_reference_info.cose');
  const b64Text = (): string => vector('real-milan/reference-info-base64').toString('ascii');

  it('uvm_reference_info.cose verifies and endorses the real report measurement', () => {
    const v = verifyUvmEndorsement(cose());
    const report = parseReport(vector('real-milan/snp_report.bin'));
    expect(v.launchMeasurement).toBe(report.measurement.toString('hex'));
    expect(v.launchMeasurement).toBe(MEASUREMENT);
    expect(v.guestSvn).toBe('22');
    expect(v.rootFingerprint).toBe(MICROSOFT_UVM_ROOT_SHA256);
    expect(v.feed).toBe('ContainerPlat-AMD-UVM');
    expect(v.chainSubjects).toEqual([
      'C=US, ST=Washington, L=Redmond, O=Microsoft Corporation, CN=ContainerPlat',
      'C=US, O=Microsoft Corporation, CN=Microsoft SCD Products RSA CA',
      'C=US, O=Microsoft Corporation, CN=Microsoft Supply Chain RSA Root CA 2022',
    ]);
  });

  it('reference-info-base64 verifies as text and as decoded bytes', () => {
    const fromText = verifyUvmEndorsement(b64Text());
    const fromBytes = verifyUvmEndorsement(Buffer.from(b64Text().trim(), 'base64'));
    expect(fromText).toEqual(fromBytes);
    expect(fromText.launchMeasurement).toBe(OTHER_MEASUREMENT);
    expect(fromText.guestSvn).toBe('100');
    // It endorses another UVM, not the one in snp_report.bin.
    expect(fromText.launchMeasurement).not.toBe(parseReport(vector('real-milan/snp_report.bin')).measurement.toString('hex'));
  });

  it('parses without verifying', () => {
    const p = parseUvmEndorsement(cose());
    expect(p.launchMeasurement).toBe(MEASUREMENT);
    expect(p.guestSvn).toBe('22');
    expect(p.payload).toEqual({ 'x-ms-sevsnpvm-guestsvn': '22', 'x-ms-sevsnpvm-launchmeasurement': MEASUREMENT });
    expect(p.sign1.x5chain).toHaveLength(3);
    expect(parseUvmEndorsement(b64Text()).guestSvn).toBe('100');
  });

  it('the real iss names the pinned root', () => {
    const did = parseDidX509(parseUvmEndorsement(cose()).sign1.iss!);
    expect(did.hash).toBe('sha256');
    expect(did.fingerprint.toString('hex')).toBe(MICROSOFT_UVM_ROOT_SHA256);
    expect(did.policies).toEqual([{ type: 'eku', value: '1.3.6.1.4.1.311.76.59.1.2' }]);
  });

  it('a flipped payload byte fails the signature', () => {
    const bytes = Buffer.from(cose());
    const at = bytes.indexOf(MEASUREMENT);
    expect(at).toBeGreaterThan(0);
    bytes[at + 10] ^= 0x01;
    expect(stepOf(() => verifyUvmEndorsement(bytes))).toBe('cose-signature');
    // Even a flip that breaks the JSON is caught by the signature before the payload is read.
    const broken = Buffer.from(cose());
    const payloadAt = broken.indexOf(parseUvmEndorsement(broken).sign1.payload!);
    expect(payloadAt).toBeGreaterThan(0);
    broken[payloadAt] ^= 0xff;
    expect(stepOf(() => parseUvmEndorsement(broken))).toBe('uvm-payload');
    expect(stepOf(() => verifyUvmEndorsement(broken))).toBe('cose-signature');
  });

  it('a flipped signature byte fails the signature', () => {
    const bytes = Buffer.from(cose());
    const sig = parseUvmEndorsement(bytes).sign1.signature;
    bytes[bytes.indexOf(sig) + 100] ^= 0x80;
    expect(stepOf(() => verifyUvmEndorsement(bytes))).toBe('cose-signature');
  });

  it('an untrusted root list fails at uvm-root', () => {
    expect(stepOf(() => verifyUvmEndorsement(cose(), { trustedRootFingerprints: ['00'.repeat(32)] }))).toBe('uvm-root');
  });

  it('accepts the pinned fingerprint in colon form', () => {
    expect(verifyUvmEndorsement(cose(), { trustedRootFingerprints: [MS_ROOT_COLONS] }).launchMeasurement).toBe(MEASUREMENT);
  });

  it('checks validity only at an explicit instant', () => {
    expect(verifyUvmEndorsement(cose(), { now: new Date('2023-06-01T00:00:00Z') }).guestSvn).toBe('22');
    expect(stepOf(() => verifyUvmEndorsement(cose(), { now: new Date('2025-01-01T00:00:00Z') }))).toBe('uvm-chain');
  });

  it('the untagged form is refused as not shaped like an endorsement', () => {
    expect(stepOf(() => verifyUvmEndorsement(cose().subarray(1)))).toBe('cose-format');
  });
});

describe('UVM endorsement: issue and verify', () => {
  let root: TestCert;
  let intermediate: TestCert;
  let leaf: TestCert;
  let opts: VerifyUvmOptions;
  const LM = 'AB'.repeat(48);

  beforeAll(() => {
    ({ root, intermediate, leaf } = makeChain());
    opts = { trustedRootFingerprints: [sha256(root.der)] };
  });

  const chain = (): Buffer[] => [leaf.der, intermediate.der, root.der];

  /** Real-shaped headers with overrides, signed by `signer`. */
  function custom(o: { payload?: unknown; x5chain?: Buffer[]; iss?: string; x5t?: CborValue; contentType?: string; signer?: TestCert } = {}): Buffer {
    const x5chain = o.x5chain ?? chain();
    const extra: CborMap = new Map<string | number, CborValue>([
      [33, x5chain],
      [34, o.x5t ?? [-16, createHash('sha256').update(x5chain[0]).digest()]],
      ['iss', o.iss ?? didX509For(root.der)],
      ['feed', 'ContainerPlat-AMD-UVM'],
    ]);
    const payload = o.payload ?? { 'x-ms-sevsnpvm-guestsvn': '7', 'x-ms-sevsnpvm-launchmeasurement': LM };
    return signSign1({
      payload: Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload)),
      alg: CoseAlg.PS384,
      privateKey: (o.signer ?? leaf).key,
      contentType: o.contentType ?? 'application/json',
      protectedExtra: extra,
    });
  }

  it('round-trips an issued endorsement shaped like the real one', () => {
    const bytes = issueUvmEndorsement({ launchMeasurement: LM, guestSvn: 7, signerKey: leaf.key, chainDer: chain(), signingTime: 1700000000 });
    const m = parseSign1(bytes);
    expect(m.tagged).toBe(true);
    expect(m.alg).toBe(CoseAlg.PS384);
    expect([...m.protectedHeader.keys()]).toEqual([1, 3, 33, 34, 'iss', 'feed', 'signingtime']);
    expect(m.protectedHeader.get('signingtime')).toEqual(new CborTag(1, 1700000000));
    expect(JSON.parse(m.payload!.toString())).toEqual({ 'x-ms-sevsnpvm-guestsvn': '7', 'x-ms-sevsnpvm-launchmeasurement': LM.toLowerCase() });
    const v = verifyUvmEndorsement(bytes, opts);
    expect(v.launchMeasurement).toBe(LM.toLowerCase());
    expect(v.guestSvn).toBe('7');
    expect(v.feed).toBe('ContainerPlat-AMD-UVM');
    expect(v.iss).toBe(`did:x509:0:sha256:${createHash('sha256').update(root.der).digest('base64url')}::eku:1.3.6.1.4.1.311.76.59.1.2`);
    expect(v.chainSubjects).toEqual(['C=US, O=Test, CN=ContainerPlat', 'C=US, O=Test, CN=Test SCD Products CA', 'C=US, O=Test, CN=Test Supply Chain Root']);
    // The same bytes as base64 text.
    expect(verifyUvmEndorsement(bytes.toString('base64') + '\n', opts).launchMeasurement).toBe(LM.toLowerCase());
  });

  it('a test chain is not trusted by default', () => {
    expect(stepOf(() => verifyUvmEndorsement(custom()))).toBe('uvm-root');
  });

  it('refuses an intermediate with the right name but another key', () => {
    const impostor = issue([['C', 'US'], ['O', 'Test'], ['CN', 'Test SCD Products CA']], root, caExts());
    expect(stepOf(() => verifyUvmEndorsement(custom({ x5chain: [leaf.der, impostor.der, root.der] }), opts))).toBe('uvm-chain');
  });

  it('refuses an issuer that is not a CA', () => {
    const notCa = issue([['CN', 'Not a CA']], root, leafExts());
    const leaf2 = issue([['CN', 'ContainerPlat']], notCa, leafExts());
    expect(stepOf(() => verifyUvmEndorsement(custom({ x5chain: [leaf2.der, notCa.der, root.der], signer: leaf2 }), opts))).toBe('uvm-chain');
  });

  it('refuses a chain in the wrong order', () => {
    expect(stepOf(() => verifyUvmEndorsement(custom({ x5chain: [leaf.der, root.der, intermediate.der] }), opts))).toBe('uvm-chain');
  });

  it('a chain that stops below the root needs the supplied root certificate, pinned', () => {
    const short = custom({ x5chain: [leaf.der, intermediate.der] });
    expect(stepOf(() => verifyUvmEndorsement(short, opts))).toBe('uvm-root');
    const v = verifyUvmEndorsement(short, { ...opts, rootCertificates: [root.der] });
    expect(v.chainSubjects).toHaveLength(3);
    expect(v.rootFingerprint).toBe(sha256(root.der));
    expect(verifyUvmEndorsement(short, { ...opts, rootCertificates: [certificateFromDer(root.der).toString()] }).guestSvn).toBe('7');
    expect(stepOf(() => verifyUvmEndorsement(short, { rootCertificates: [root.der] }))).toBe('uvm-root');
    const otherRoot = issue([['C', 'US'], ['O', 'Test'], ['CN', 'Test Supply Chain Root']], undefined, caExts());
    expect(stepOf(() => verifyUvmEndorsement(short, { trustedRootFingerprints: [sha256(otherRoot.der)], rootCertificates: [otherRoot.der] }))).toBe('uvm-root');
  });

  it('iss must name the chain root and its EKU must hold for the leaf', () => {
    const otherRoot = issue([['CN', 'Other root']], undefined, caExts());
    expect(stepOf(() => verifyUvmEndorsement(custom({ iss: didX509For(otherRoot.der) }), opts))).toBe('uvm-root');
    expect(stepOf(() => verifyUvmEndorsement(custom({ iss: didX509For(intermediate.der) }), opts))).toBe('uvm-root');
    expect(stepOf(() => verifyUvmEndorsement(custom({ iss: didX509For(root.der, '1.2.3.4') }), opts))).toBe('uvm-root');
    expect(stepOf(() => verifyUvmEndorsement(custom({ iss: didX509For(root.der) + '::subject:CN:ContainerPlat' }), opts))).toBe('uvm-root');
    expect(stepOf(() => verifyUvmEndorsement(custom({ iss: 'https://example.com' }), opts))).toBe('uvm-root');
    const noEku = issue([['CN', 'ContainerPlat']], intermediate, leafExts(['1.3.6.1.4.1.311.76.59.1.1']));
    expect(stepOf(() => verifyUvmEndorsement(custom({ x5chain: [noEku.der, intermediate.der, root.der], signer: noEku }), opts))).toBe('uvm-root');
  });

  it('refuses a signature by a key other than the leaf', () => {
    expect(stepOf(() => verifyUvmEndorsement(custom({ signer: intermediate }), opts))).toBe('cose-signature');
  });

  it('refuses malformed envelopes at cose-format', () => {
    expect(stepOf(() => verifyUvmEndorsement(Buffer.from('not cbor'), opts))).toBe('cose-format');
    expect(stepOf(() => verifyUvmEndorsement('***not base64***', opts))).toBe('cose-format');
    expect(stepOf(() => verifyUvmEndorsement('', opts))).toBe('cose-format');
    expect(stepOf(() => verifyUvmEndorsement(custom({ contentType: 'text/plain' }), opts))).toBe('cose-format');
    expect(stepOf(() => verifyUvmEndorsement(custom({ x5t: [-16, Buffer.alloc(32)] }), opts))).toBe('cose-format');
    expect(stepOf(() => verifyUvmEndorsement(custom({ x5chain: [Buffer.from('junk'), root.der] }), opts))).toBe('cose-format');
    const noChain = signSign1({ payload: Buffer.from('{}'), alg: CoseAlg.PS384, privateKey: leaf.key, contentType: 'application/json' });
    expect(stepOf(() => verifyUvmEndorsement(noChain, opts))).toBe('cose-format');
  });

  it('refuses signed payloads without the claims at uvm-payload', () => {
    const bad: unknown[] = [
      Buffer.from('not json'),
      [1, 2],
      { 'x-ms-sevsnpvm-guestsvn': '7' },
      { 'x-ms-sevsnpvm-guestsvn': '7', 'x-ms-sevsnpvm-launchmeasurement': 'ab'.repeat(47) },
      { 'x-ms-sevsnpvm-guestsvn': 7, 'x-ms-sevsnpvm-launchmeasurement': LM },
      { 'x-ms-sevsnpvm-guestsvn': '-1', 'x-ms-sevsnpvm-launchmeasurement': LM },
    ];
    for (const payload of bad) expect(stepOf(() => verifyUvmEndorsement(custom({ payload }), opts))).toBe('uvm-payload');
  });

  it('validates issue inputs and fingerprints', () => {
    expect(() => issueUvmEndorsement({ launchMeasurement: 'ab', guestSvn: 1, signerKey: leaf.key, chainDer: chain() })).toThrow(
      expect.objectContaining({ code: 'ERR_UVM_ISSUE' }),
    );
    expect(() => issueUvmEndorsement({ launchMeasurement: LM, guestSvn: 'x', signerKey: leaf.key, chainDer: chain() })).toThrow(
      expect.objectContaining({ code: 'ERR_UVM_ISSUE' }),
    );
    expect(normaliseFingerprint(MS_ROOT_COLONS)).toBe(MICROSOFT_UVM_ROOT_SHA256);
    expect(() => normaliseFingerprint('abc')).toThrow(expect.objectContaining({ code: 'ERR_FINGERPRINT' }));
  });

  it('the issued bytes re-encode identically (canonical encoder)', () => {
    const bytes = issueUvmEndorsement({ launchMeasurement: LM, guestSvn: '3', signerKey: leaf.key, chainDer: chain(), signingTime: 1 });
    expect(encodeCbor(decodeCbor(bytes))).toEqual(bytes);
  });
});

describe('did:x509 parsing', () => {
  it('splits policies on :: only and refuses malformed identifiers', () => {
    const fp = Buffer.alloc(32, 7).toString('base64url');
    expect(parseDidX509(`did:x509:0:sha256:${fp}::subject:CN:x::eku:1.2.3`).policies).toEqual([
      { type: 'subject', value: 'CN:x' },
      { type: 'eku', value: '1.2.3' },
    ]);
    for (const bad of [`did:x509:0:sha256:${fp}`, `did:x509:1:sha256:${fp}::eku:1.2`, `did:x509:0:md5:${fp}::eku:1.2`, `did:x509:0:sha256:${fp.slice(1)}::eku:1.2`, `did:x509:0:sha256:${fp}::eku`, `did:x509:0:sha256:${fp}::eku:`]) {
      expect(() => parseDidX509(bad)).toThrow(expect.objectContaining({ step: 'uvm-root' }));
    }
  });
});
