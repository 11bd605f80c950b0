/**
 * Verification of an AMD chain (VCEK ← ASK ← ARK, RSASSA-PSS/SHA-384) against pinned roots, and of
 * an SEV-SNP report against that chain. Steps run in a fixed order and each failure names its step
 * (VerificationError.step) so operators can tell a stale chain from a forged report.
 */
import { verify as cryptoVerify, type X509Certificate } from 'node:crypto';
import { certificateFromDer } from '../asn1/certificate';
import { InvalidInputError, VerificationError } from '../common/errors';
import { toHex } from '../common/bytes';
import { AttestationReport, parseReport, reportProduct, SIG_ALGO_ECDSA_P384_SHA384, SIGNED_LENGTH } from '../snp/report';
import { Product, tcbToHex } from '../snp/tcb';
import { pemCertificatesToDer } from './pem';
import { certFingerprint256, TrustStore } from './roots';
import type { AmdCertChain } from './types';
import { readVcekExtensions, VcekExtensions } from './vcek';

/** SIGNER_INFO bit 1: the host masked CHIP_ID (it reads as zeros). */
export const SIGNER_INFO_MASK_CHIP_KEY = 1 << 1;

export interface VerifyOptions {
  /** Clock for validity checks; default now. */
  now?: Date;
}

export interface VerifiedChain {
  vcek: X509Certificate;
  ask: X509Certificate;
  ark: X509Certificate;
  /** e.g. `AMD Milan ARK`. */
  arkLabel: string;
  arkSha256: string;
  vcekExtensions: VcekExtensions;
}

export interface VerifiedReport {
  report: AttestationReport;
  product: Product;
  /** TCB the VCEK certifies (= the report's REPORTED_TCB once this returns). */
  vcekTcb: bigint;
  chain: VerifiedChain;
}

function fail(step: string, message: string, cause?: unknown): never {
  throw new VerificationError(step, `${step}: ${message}`, cause);
}

function parseCerts(pem: string, what: string): X509Certificate[] {
  try {
    return pemCertificatesToDer(pem, what).map((d, i) => certificateFromDer(d, `${what} certificate ${i + 1}`));
  } catch (e) {
    return fail('chain-format', `${what} does not parse: ${(e as Error).message}`, e);
  }
}

const cn = (c: X509Certificate) => /CN=([^\n]*)/.exec(c.subject)?.[1] ?? c.subject.replace(/\n/g, ', ');

function checkValidity(c: X509Certificate, role: string, now: Date): void {
  const from = new Date(c.validFrom);
  const to = new Date(c.validTo);
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) fail('cert-expired', `${role} (${cn(c)}) has unreadable validity dates`);
  if (now < from) fail('cert-expired', `${role} (${cn(c)}) is not valid before ${from.toISOString()}`);
  if (now > to) fail('cert-expired', `${role} (${cn(c)}) expired at ${to.toISOString()}`);
}

/** VCEK ← ASK ← ARK with the ARK pinned; never trusts an ARK merely because it came along. */
export function verifyAmdChain(chain: AmdCertChain, trust: TrustStore, opts: VerifyOptions = {}): VerifiedChain {
  const vceks = parseCerts(chain.vcekPem, 'VCEK PEM');
  if (vceks.length !== 1) fail('chain-format', `expected exactly one VCEK certificate, got ${vceks.length}`);
  const rest = parseCerts(chain.chainPem, 'chain PEM');
  if (rest.length !== 2) fail('chain-format', `expected exactly two chain certificates (ASK, ARK), got ${rest.length}`);
  const vcek = vceks[0];
  const [ask, ark] = rest;

  const arkSha256 = certFingerprint256(ark);
  const arkLabel = trust.labelOf(ark);
  if (arkLabel === undefined) {
    fail('ark-pinned', `ARK "${cn(ark)}" (sha256 ${arkSha256}) is not a pinned root; ${trust.describe()}`);
  }
  if (!ark.checkIssued(ark) || !ark.verify(ark.publicKey)) fail('ark-self-signed', `ARK "${cn(ark)}" is not self-signed`);
  if (!ask.checkIssued(ark) || !ask.verify(ark.publicKey)) fail('ark-signs-ask', `ASK "${cn(ask)}" is not signed by ARK "${cn(ark)}"`);
  if (!vcek.checkIssued(ask) || !vcek.verify(ask.publicKey)) fail('ask-signs-vcek', `VCEK "${cn(vcek)}" is not signed by ASK "${cn(ask)}"`);

  const now = opts.now ?? new Date();
  checkValidity(ark, 'ARK', now);
  checkValidity(ask, 'ASK', now);
  checkValidity(vcek, 'VCEK', now);

  // Only now, with AMD's signature on it checked, are the VCEK's own bytes worth parsing.
  let vcekExtensions: VcekExtensions;
  try {
    vcekExtensions = readVcekExtensions(vcek);
  } catch (e) {
    if (e instanceof InvalidInputError) fail('vcek-extensions', e.message, e);
    throw e;
  }
  return { vcek, ask, ark, arkLabel, arkSha256, vcekExtensions };
}

/** r or s: 72 bytes little-endian in the report → 48 bytes big-endian (P-384), refusing high garbage. */
function sigComponent(le: Buffer, name: string): Buffer {
  if (le.subarray(48).some((b) => b !== 0)) fail('report-signature', `signature ${name} has non-zero bytes above 48`);
  return Buffer.from(le.subarray(0, 48)).reverse();
}

/** The report-signature step alone: ECDSA P-384/SHA-384 over [0, 0x2A0) with the VCEK's key. */
export function verifyReportSignature(report: AttestationReport, vcek: X509Certificate): void {
  const key = vcek.publicKey;
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'secp384r1') {
    fail('report-signature', `VCEK key is ${key.asymmetricKeyType} ${key.asymmetricKeyDetails?.namedCurve ?? ''}, expected EC P-384`);
  }
  const sig = Buffer.concat([sigComponent(report.signatureR, 'r'), sigComponent(report.signatureS, 's')]);
  const ok = cryptoVerify('sha384', report.raw.subarray(0, SIGNED_LENGTH), { key, dsaEncoding: 'ieee-p1363' }, sig);
  if (!ok) fail('report-signature', `report signature does not verify with VCEK "${cn(vcek)}"`);
}

/** Verify a raw report against `chain`, in the order documented on each step. */
export function verifyReport(reportBytes: Uint8Array, chain: AmdCertChain, trust: TrustStore, opts: VerifyOptions = {}): VerifiedReport {
  const report = parseReport(reportBytes);
  const verified = verifyAmdChain(chain, trust, opts);
  const ext = verified.vcekExtensions;

  if (ext.tcbRaw !== report.reportedTcb) {
    fail('vcek-tcb', `VCEK is for TCB ${tcbToHex(ext.tcbRaw)} but the report's REPORTED_TCB is ${tcbToHex(report.reportedTcb)}`);
  }

  const masked = (report.signerInfo & SIGNER_INFO_MASK_CHIP_KEY) !== 0 || report.chipId.every((b) => b === 0);
  if (ext.hwid && !masked) {
    const chipPrefix = report.chipId.subarray(0, ext.hwid.length);
    if (!chipPrefix.equals(ext.hwid)) {
      fail('vcek-hwid', `VCEK hwid ${toHex(ext.hwid)} is not the report's CHIP_ID ${toHex(report.chipId)}`);
    }
  }

  if (report.signatureAlgo !== SIG_ALGO_ECDSA_P384_SHA384) {
    fail('signature-algo', `SIGNATURE_ALGO is ${report.signatureAlgo}, only 1 (ECDSA P-384 with SHA-384) exists`);
  }

  verifyReportSignature(report, verified.vcek);

  const product = ext.product ?? trust.amdProductOf(verified.ark) ?? reportProduct(report);
  return { report, product, vcekTcb: ext.tcbRaw, chain: verified };
}
