/**
 * A self-made AMD-shaped hierarchy for tests: RSA-PSS ARK → ASK, an EC P-384 VCEK carrying AMD's
 * extensions, and reports signed with that VCEK. Built with src/asn1/x509.ts; nothing here is trusted
 * unless a test adds the ARK to a TrustStore explicitly.
 */
import { generateKeyPairSync, KeyObject, sign } from 'node:crypto';
import { der } from '../../src/asn1/der';
import { basicConstraints, buildCertificate, DistinguishedName, Extension, pemOf, rawExtension, subjectNameOf } from '../../src/asn1/x509';
import { buildReport, ReportFields, SIGNED_LENGTH, Off } from '../../src/snp/report';
import { decodeTcb, Product } from '../../src/snp/tcb';
import { AmdOid } from '../../src/certs/vcek';
import type { AmdCertChain } from '../../src/certs/types';

const DAY = 86_400_000;
const amdName = (cn: string): DistinguishedName => [['OU', 'Engineering'], ['C', 'US'], ['O', 'Test Micro Devices'], ['CN', cn]];

export interface TestHierarchy {
  arkPem: string;
  askPem: string;
  arkDer: Buffer;
  askDer: Buffer;
  askKey: KeyObject;
  arkKey: KeyObject;
}

let cached: TestHierarchy | undefined;

/** ARK + ASK (RSA-2048 to keep tests fast; AMD uses 4096), memoised per test file. */
export function testHierarchy(): TestHierarchy {
  if (cached) return cached;
  const ark = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ask = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const now = Date.now();
  const arkDer = buildCertificate({
    subject: amdName('ARK-Test'), issuer: amdName('ARK-Test'), serialNumber: 1n,
    notBefore: new Date(now - DAY), notAfter: new Date(now + 3650 * DAY),
    subjectPublicKey: ark.publicKey, issuerPrivateKey: ark.privateKey, signatureAlgorithm: 'rsa-pss-sha384',
    extensions: [basicConstraints(true)],
  });
  const askDer = buildCertificate({
    subject: amdName('SEV-Test'), issuer: subjectNameOf(arkDer), serialNumber: 2n,
    notBefore: new Date(now - DAY), notAfter: new Date(now + 3650 * DAY),
    subjectPublicKey: ask.publicKey, issuerPrivateKey: ark.privateKey, signatureAlgorithm: 'rsa-pss-sha384',
    extensions: [basicConstraints(true)],
  });
  cached = { arkPem: pemOf(arkDer), askPem: pemOf(askDer), arkDer, askDer, askKey: ask.privateKey, arkKey: ark.privateKey };
  return cached;
}

export interface VcekSpec {
  productName?: string;
  product?: Product;
  tcb: bigint;
  hwid?: Buffer;
  notBefore?: Date;
  notAfter?: Date;
  /** Leave these extensions out. */
  omit?: string[];
}

export interface TestVcek {
  der: Buffer;
  pem: string;
  key: KeyObject;
}

export function makeVcek(h: TestHierarchy, spec: VcekSpec): TestVcek {
  const product = spec.product ?? 'Milan';
  const t = decodeTcb(spec.tcb, product);
  const int = (n: number) => der.int(n);
  const exts: Extension[] = [
    rawExtension(AmdOid.structVersion, false, int(product === 'Turin' ? 1 : 0)),
    rawExtension(AmdOid.productName, false, der.ia5(spec.productName ?? `${product}-B0`)),
    rawExtension(AmdOid.blSpl, false, int(t.bootloader)),
    rawExtension(AmdOid.teeSpl, false, int(t.tee)),
    rawExtension(AmdOid.snpSpl, false, int(t.snp)),
    rawExtension(AmdOid.ucodeSpl, false, int(t.microcode)),
    ...(product === 'Turin' ? [rawExtension(AmdOid.fmcSpl, false, int(t.fmc ?? 0))] : []),
    ...(spec.hwid ? [rawExtension(AmdOid.hwid, false, spec.hwid)] : []),
  ].filter((e) => !(spec.omit ?? []).includes(e.oid));
  const kp = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const now = Date.now();
  const d = buildCertificate({
    subject: amdName('SEV-VCEK'), issuer: subjectNameOf(h.askDer), serialNumber: 3n,
    notBefore: spec.notBefore ?? new Date(now - DAY), notAfter: spec.notAfter ?? new Date(now + 365 * DAY),
    subjectPublicKey: kp.publicKey, issuerPrivateKey: h.askKey, signatureAlgorithm: 'rsa-pss-sha384',
    extensions: exts,
  });
  return { der: d, pem: pemOf(d), key: kp.privateKey };
}

export function chainOf(h: TestHierarchy, v: TestVcek, tcbm: bigint, source = 'test'): AmdCertChain {
  return { vcekPem: v.pem, chainPem: h.askPem + h.arkPem, tcbm, source };
}

/** A report signed by `key` the way firmware does: r, s little-endian in 72-byte fields. */
export function signedReport(key: KeyObject, fields: ReportFields): Buffer {
  const raw = buildReport(fields);
  const sig = sign('sha384', raw.subarray(0, SIGNED_LENGTH), { key, dsaEncoding: 'ieee-p1363' });
  Buffer.from(sig.subarray(0, 48)).reverse().copy(raw, Off.signature);
  Buffer.from(sig.subarray(48)).reverse().copy(raw, Off.signature + 72);
  return raw;
}
