/**
 * Local verification of a TD quote, in a fixed order; every refusal is a VerificationError whose
 * step names what failed (as src/certs does for SEV-SNP):
 *
 *   quote-format         the bytes decode as a TD quote v4/v5 with QE report certification data
 *   pck-chain            PCK ← Intel SGX PCK Platform/Processor CA ← root, signatures and validity
 *   intel-root-pinned    the root is the pinned Intel SGX Root CA (or an explicitly configured root)
 *   qe-report-signature  the PCK certificate's key signs the QE report (ECDSA P-256/SHA-256)
 *   qe-report-binding    QE REPORTDATA = sha256(attestation key ‖ QE authentication data) ‖ zeros
 *   td-quote-signature   the attestation key signs header ‖ body (ECDSA P-256/SHA-256)
 *
 * TCB status (up to date, out of date, revoked) needs Intel's PCS collateral (TCB info for the FMSPC,
 * QE identity). Given `collateral` (fetched by ./collateral-source.ts or read from files), it is verified
 * (./collateral.ts: tcb-info-chain, tcb-info-signature, tcb-info-format, tcb-info-expired and the same
 * for qe-identity) and evaluated (./tcb.ts: tcb-info-fmspc, tcb-level, tdx-module, qe-identity); a
 * Revoked result is refused at `tcb-status`. Without it the result says `tcbStatus: 'not-checked'`.
 * Bindings to an Azure HCL report are separate steps (checkTdReportBinding, tdreport-hashes).
 */
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject, type X509Certificate } from 'node:crypto';
import { certificateFromDer } from '../asn1/certificate';
import { pemCertificatesToDer } from '../certs/pem';
import { toHex } from '../common/bytes';
import { InvalidInputError, VerificationError } from '../common/errors';
import { verifyTdQeIdentity, verifyTdxTcbInfo, type TdxCollateral } from './collateral';
import { pckInfo, type PckInfo } from './pck';
import { parseTdQuote, type TdQuote } from './quote';
import { fingerprint256, IntelTrustStore } from './roots';
import { evaluateTdxTcb, type TdxTcbEvaluation, type TdxTcbStatus } from './tcb';
import { tdReportHashesMatch, type TdMeasurements, type TdReport } from './tdreport';

export interface TdxVerifyOptions {
  trust?: IntelTrustStore;
  /** Clock for certificate validity; default now. */
  now?: Date;
  /** Intel's TCB info and QE identity for this platform: when given, the TCB status is evaluated. */
  collateral?: TdxCollateral;
}

export interface VerifiedTdQuote {
  quote: TdQuote;
  pck: X509Certificate;
  intermediate: X509Certificate;
  root: X509Certificate;
  rootLabel: string;
  rootSha256: string;
  /** The combined TCB status, or 'not-checked' when no collateral was given. */
  tcbStatus: TdxTcbStatus | 'not-checked';
  /** The evaluation behind tcbStatus, when collateral was given. */
  tcb?: TdxTcbEvaluation;
  /** From the (verified) PCK certificate: the FMSPC whose TCB info would decide the status. */
  pckInfo: PckInfo;
}

function fail(step: string, message: string, cause?: unknown): never {
  throw new VerificationError(step, `${step}: ${message}`, cause);
}

const cn = (c: X509Certificate) => /CN=([^\n]*)/.exec(c.subject)?.[1] ?? c.subject.replace(/\n/g, ', ');

function checkValidity(c: X509Certificate, role: string, now: Date): void {
  const from = new Date(c.validFrom);
  const to = new Date(c.validTo);
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) fail('pck-chain', `${role} (${cn(c)}) has unreadable validity dates`);
  if (now < from) fail('pck-chain', `${role} (${cn(c)}) is not valid before ${from.toISOString()}`);
  if (now > to) fail('pck-chain', `${role} (${cn(c)}) expired at ${to.toISOString()}`);
}

/** PCK ← intermediate ← pinned root. The chain comes with the quote; only the pin makes it Intel's. */
export function verifyPckChain(pem: string, trust: IntelTrustStore, now: Date): { pck: X509Certificate; intermediate: X509Certificate; root: X509Certificate; rootLabel: string } {
  let certs: X509Certificate[];
  try {
    certs = pemCertificatesToDer(pem, 'PCK chain').map((d, i) => certificateFromDer(d, `PCK chain certificate ${i + 1}`));
  } catch (e) {
    return fail('pck-chain', (e as Error).message, e);
  }
  if (certs.length !== 3) fail('pck-chain', `expected 3 certificates (PCK, PCK CA, root), got ${certs.length}`);
  const [pck, intermediate, root] = certs;
  const rootLabel = trust.labelOf(root);
  if (rootLabel === undefined) fail('intel-root-pinned', `root "${cn(root)}" (sha256 ${fingerprint256(root)}) is not pinned; ${trust.describe()}`);
  if (!root.checkIssued(root) || !root.verify(root.publicKey)) fail('pck-chain', `root "${cn(root)}" is not self-signed`);
  if (!intermediate.checkIssued(root) || !intermediate.verify(root.publicKey)) fail('pck-chain', `"${cn(intermediate)}" is not signed by "${cn(root)}"`);
  if (!pck.checkIssued(intermediate) || !pck.verify(intermediate.publicKey)) fail('pck-chain', `PCK certificate "${cn(pck)}" is not signed by "${cn(intermediate)}"`);
  checkValidity(root, 'root', now);
  checkValidity(intermediate, 'PCK CA', now);
  checkValidity(pck, 'PCK certificate', now);
  return { pck, intermediate, root, rootLabel };
}

function p256Key(step: string, xy: Buffer): KeyObject {
  try {
    return createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: xy.subarray(0, 32).toString('base64url'), y: xy.subarray(32, 64).toString('base64url') }, format: 'jwk' });
  } catch (e) {
    return fail(step, 'the attestation key is not a point on P-256', e);
  }
}

function ecdsaOk(key: KeyObject, data: Buffer, sig: Buffer): boolean {
  try {
    return cryptoVerify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig);
  } catch {
    return false;
  }
}

/** Decode (unless given decoded) and verify a TD quote's signatures and chain. */
export function verifyTdQuote(input: Uint8Array | TdQuote, opts: TdxVerifyOptions = {}): VerifiedTdQuote {
  let quote: TdQuote;
  if (input instanceof Uint8Array) {
    try {
      quote = parseTdQuote(input);
    } catch (e) {
      if (e instanceof InvalidInputError) fail('quote-format', e.message, e);
      throw e;
    }
  } else {
    quote = input;
  }
  const trust = opts.trust ?? new IntelTrustStore();
  const chain = verifyPckChain(quote.pckChainPem, trust, opts.now ?? new Date());

  const pckKey = chain.pck.publicKey;
  if (pckKey.asymmetricKeyType !== 'ec' || pckKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    fail('qe-report-signature', `the PCK certificate's key is ${pckKey.asymmetricKeyType} ${pckKey.asymmetricKeyDetails?.namedCurve ?? ''}, expected EC P-256`);
  }
  if (!ecdsaOk(pckKey, quote.qeReport.raw, quote.qeReportSignature)) fail('qe-report-signature', `the QE report is not signed by PCK certificate "${cn(chain.pck)}"`);

  const expected = Buffer.concat([createHash('sha256').update(quote.attestationKey).update(quote.qeAuthData).digest(), Buffer.alloc(32)]);
  if (!expected.equals(quote.qeReport.reportData)) {
    fail('qe-report-binding', `QE REPORTDATA ${toHex(quote.qeReport.reportData)} is not sha256(attestation key ‖ QE authentication data) ${toHex(expected.subarray(0, 32))} followed by zeros`);
  }

  const ak = p256Key('td-quote-signature', quote.attestationKey);
  if (!ecdsaOk(ak, quote.signedBytes, quote.signature)) fail('td-quote-signature', 'the quote signature does not verify with its attestation key (header and TD report body)');

  const info = pckInfo(chain.pck);
  const out: VerifiedTdQuote = { quote, ...chain, rootSha256: fingerprint256(chain.root), tcbStatus: 'not-checked', pckInfo: info };
  if (opts.collateral) {
    const now = opts.now ?? new Date();
    const tcbInfo = verifyTdxTcbInfo(opts.collateral.tcbInfo, trust, now);
    const qeIdentity = verifyTdQeIdentity(opts.collateral.qeIdentity, trust, now);
    const tcb = evaluateTdxTcb(tcbInfo, qeIdentity, info, quote.body, quote.qeReport);
    if (tcb.status === 'Revoked') fail('tcb-status', `Intel's collateral says this platform's TCB is Revoked (advisories: ${tcb.advisoryIds.join(', ') || 'none'})`);
    out.tcbStatus = tcb.status;
    out.tcb = tcb;
  }
  return out;
}

const MEASUREMENT_FIELDS: [keyof Omit<TdMeasurements, 'rtmrs'>, string][] = [
  ['teeTcbSvn', 'TEE_TCB_SVN'],
  ['mrSeam', 'MRSEAM'],
  ['mrSignerSeam', 'MRSIGNERSEAM'],
  ['seamAttributes', 'SEAMATTRIBUTES'],
  ['tdAttributes', 'TDATTRIBUTES'],
  ['xfam', 'XFAM'],
  ['mrTd', 'MRTD'],
  ['mrConfigId', 'MRCONFIGID'],
  ['mrOwner', 'MROWNER'],
  ['mrOwnerConfig', 'MROWNERCONFIG'],
  ['reportData', 'REPORTDATA'],
];

/** Step `td-report-binding`: the quote's TD report body is the TDREPORT the paravisor put in the HCL report. */
export function checkTdReportBinding(quote: TdQuote, report: TdReport): void {
  for (const [k, name] of MEASUREMENT_FIELDS) {
    if (!quote.body[k].equals(report[k])) fail('td-report-binding', `${name} of the quote (${toHex(quote.body[k])}) is not the HCL report's TDREPORT ${name} (${toHex(report[k])})`);
  }
  for (let i = 0; i < 4; i++) {
    if (!quote.body.rtmrs[i].equals(report.rtmrs[i])) fail('td-report-binding', `RTMR${i} of the quote is not the HCL report's TDREPORT RTMR${i}`);
  }
  if (quote.body.teeTcbSvn2 && !quote.body.teeTcbSvn2.equals(report.teeTcbSvn2)) fail('td-report-binding', "TEE_TCB_SVN2 of the quote is not the HCL report's");
}

/** Step `tdreport-hashes`: REPORTMACSTRUCT's hashes are SHA-384 of the TEE_TCB_INFO and TDINFO we read. */
export function checkTdReportHashes(report: TdReport): void {
  const m = tdReportHashesMatch(report);
  if (!m.teeTcbInfo) fail('tdreport-hashes', 'TEE_TCB_INFO_HASH is not sha384(TEE_TCB_INFO): the TDREPORT was altered after the TDX module wrote it');
  if (!m.tdInfo) fail('tdreport-hashes', 'TEE_INFO_HASH is not sha384(TDINFO): the TDREPORT was altered after the TDX module wrote it');
}
