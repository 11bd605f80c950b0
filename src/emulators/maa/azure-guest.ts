/**
 * The emulator's `POST /attest/AzureGuest` (Azure confidential VM guest attestation, CVM-PROTOCOL §4–6).
 * It checks what MAA checks, each refusal naming its step:
 *   1. the embedded SNP report: AMD chain to a trusted ARK, TCB, signature (src/certs step names); or on
 *      TDX (`IsolationInfo.Type "Tdx"`) the TD quote with src/tdx's verifier (pck-chain, intel-root-pinned,
 *      qe-report-signature, qe-report-binding, td-quote-signature) against the Intel roots it trusts;
 *   2. `hcl-claims-binding`: REPORT_DATA (the quote's REPORTDATA on TDX) = sha256(RunTimeData) then zeros;
 *   3. `ak-cert`: the AK certificate (DER, zero padding tolerated) chains to a trusted vTPM CA and is valid;
 *      `ak-cert-key`: its key is AikPub; `ak-hcl-binding`: AikPub is the claims' HCLAkPub;
 *   4. `pcr-quote`: the quote is signed by the AK and its PCR digest is sha256 of the PCRs sent;
 *   5. `enc-key-certify`: the Certify signature is the AK's and names EncKeyPub; `enc-key-attributes`: a
 *      TPM-bound (fixedTPM) RSA-2048 decryption key that cannot sign;
 * then answers with the JWT (claims of §6) sealed to EncKeyPub (azure-guest-envelope).
 * Emulator choices where MAA's behaviour is not public: without TCG log parsing, `secureboot` and the
 * boot-policy claims follow the runtime claims' `vm-configuration.secure-boot`; a debuggable or non-VMPL-0
 * report (a debuggable TD on TDX) is attested with `x-ms-compliance-status: azure-noncompliant-cvm` rather
 * than refused. TDX claims follow MAA's TDX EAT profile (`tdx_mrtd`, `tdx_mrseam`, …); `attester_tcb_status`
 * is not claimed, since the emulator has no Intel TCB collateral to evaluate.
 */
import { createHash, KeyObject, verify as cryptoVerify, type X509Certificate } from 'node:crypto';
import { SignJWT } from 'jose';
import { certificateFromDer } from '../../asn1/certificate';
import { readTlv } from '../../asn1/der';
import { InvalidInputError, VerificationError } from '../../common/errors';
import { derToPem, pemCertificatesToDer } from '../../certs/pem';
import type { TrustStore } from '../../certs/roots';
import { verifyReport, type VerifiedReport } from '../../certs/verify';
import { checkClaimsBinding, checkHclClaimsBinding, claimsKey } from '../../cvm/hcl';
import { IntelTrustStore } from '../../tdx/roots';
import { tdIsDebuggable } from '../../tdx/tdreport';
import { verifyTdQuote, type VerifiedTdQuote } from '../../tdx/verify';
import { sealEnvelope } from '../../maa/azure-guest-envelope';
import { isTdxIsolation, parseAzureGuestRequest, type ParsedAzureGuestRequest, type SnpIsolation, type TdxIsolation } from '../../maa/azure-guest-request';
import { POLICY_DEBUG_BIT } from '../../snp/report';
import { objectName, parseAttest, parsePublic2b, rsaKeyOf, TPM_ALG, TPMA_OBJECT, TpmResponseError, type Attest } from '../../tpm';
import { claimsFromReport } from './claims';
import { MaaEmulatorRefusal } from './refusal';

export const COMPLIANT_CVM = 'azure-compliant-cvm';
export const NONCOMPLIANT_CVM = 'azure-noncompliant-cvm';
export const TPM_KEY_KID = 'TpmEphemeralEncryptionKey';

export interface AzureGuestTrust {
  amd: TrustStore;
  /** Intel roots a TD quote may chain to (default: Intel's pinned root only). */
  intel?: IntelTrustStore;
  /** vTPM CA certificates an AK certificate may chain to (Azure's; for local use the test-only CA). */
  vtpmCas: X509Certificate[];
  now: Date;
}

export interface VerifiedAzureGuest {
  /** The SEV-SNP report, or on TDX the verified TD quote. */
  verified: VerifiedReport | VerifiedTdQuote;
  runtime: Record<string, unknown>;
  encKey: KeyObject;
}

function refuse(step: string, message: string, cause?: unknown): never {
  throw new MaaEmulatorRefusal(step, message, cause !== undefined ? { cause } : {});
}

function attestOf(b: Buffer, step: string, what: string): Attest {
  try {
    return parseAttest(b, what);
  } catch (e) {
    if (e instanceof TpmResponseError) refuse(step, e.message, e);
    throw e;
  }
}

/** The DER certificate at the start of the AK certificate index content (the rest is padding). */
function akCertificate(content: Buffer, trust: AzureGuestTrust): X509Certificate {
  let cert: X509Certificate;
  try {
    const { next } = readTlv(content, 0);
    if (content.subarray(next).some((b) => b !== 0)) refuse('ak-cert', 'non-zero bytes after the AK certificate');
    cert = certificateFromDer(content.subarray(0, next), 'AikCert');
  } catch (e) {
    if (e instanceof MaaEmulatorRefusal) throw e;
    refuse('ak-cert', `AikCert is not a DER certificate: ${(e as Error).message}`, e);
  }
  const issuer = trust.vtpmCas.find((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
  if (!issuer) refuse('ak-cert', `AK certificate "${cert.subject.replace(/\n/g, ', ').slice(0, 200)}" is not issued by a trusted vTPM CA`);
  if (trust.now < new Date(cert.validFrom) || trust.now > new Date(cert.validTo)) refuse('ak-cert', `AK certificate is not valid now (${cert.validFrom} .. ${cert.validTo})`);
  return cert;
}

function rsaPublicOf(b: Buffer, field: string, step: string) {
  try {
    const { area, tpmtBytes } = parsePublic2b(b, field);
    return { area, tpmtBytes, key: rsaKeyOf(area) };
  } catch (e) {
    refuse(step, `${field} is not an RSA TPM2B_PUBLIC: ${(e as Error).message}`, e);
  }
}

function isTdx(v: VerifiedReport | VerifiedTdQuote): v is VerifiedTdQuote {
  return 'quote' in v;
}

/** Steps 1–2 on TDX: the TD quote, then the runtime claims bound by its REPORTDATA. */
function verifyTdxIsolation(iso: TdxIsolation, trust: AzureGuestTrust): VerifiedTdQuote {
  try {
    const v = verifyTdQuote(iso.tdQuote, { trust: trust.intel ?? new IntelTrustStore(), now: trust.now });
    checkClaimsBinding(v.quote.body.reportData, iso.runtimeClaims);
    return v;
  } catch (e) {
    if (e instanceof VerificationError) refuse(e.step, e.message, e);
    throw e;
  }
}

export function verifyAzureGuestEvidence(req: ParsedAzureGuestRequest, trust: AzureGuestTrust): VerifiedAzureGuest {
  const verified = isTdxIsolation(req.isolation) ? verifyTdxIsolation(req.isolation, trust) : verifySnpIsolation(req.isolation, trust);
  return verifyTpmEvidence(req, trust, verified);
}

function verifySnpIsolation(iso: SnpIsolation, trust: AzureGuestTrust): VerifiedReport {
  // 1. The hardware report.
  let ders: Buffer[];
  try {
    ders = pemCertificatesToDer(iso.vcekCertChainPem, 'VcekCertChain');
  } catch (e) {
    refuse('chain-format', (e as Error).message, e);
  }
  if (ders.length === 0) refuse('chain-format', 'VcekCertChain holds no certificate');
  let verified: VerifiedReport;
  try {
    verified = verifyReport(iso.snpReport, { vcekPem: derToPem(ders[0]), chainPem: ders.slice(1).map(derToPem).join(''), tcbm: 0n, source: 'request' }, trust.amd, { now: trust.now });
    // 2. The runtime claims are the ones the report vouches for.
    checkHclClaimsBinding(verified.report, iso.runtimeClaims);
  } catch (e) {
    if (e instanceof VerificationError) refuse(e.step, e.message, e);
    if (e instanceof InvalidInputError) refuse('evidence-format', e.message, e);
    throw e;
  }
  return verified;
}

function verifyTpmEvidence(req: ParsedAzureGuestRequest, trust: AzureGuestTrust, verified: VerifiedReport | VerifiedTdQuote): VerifiedAzureGuest {
  let runtime: Record<string, unknown>;
  try {
    const j: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(req.isolation.runtimeClaims));
    if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new Error('not an object');
    runtime = j as Record<string, unknown>;
  } catch (e) {
    refuse('evidence-format', `RunTimeData is not a JSON object: ${(e as Error).message}`, e);
  }

  // 3. The AK: certified by the vTPM CA, and the one the paravisor reported.
  const cert = akCertificate(req.tpm.akCert, trust);
  const ak = rsaPublicOf(req.tpm.akPub, 'AikPub', 'ak-cert-key');
  if (!cert.publicKey.equals(ak.key)) refuse('ak-cert-key', 'AikPub is not the key of the AK certificate');
  const hclAk = claimsKey(runtime, 'HCLAkPub');
  const akJwk = ak.key.export({ format: 'jwk' });
  if (!hclAk || hclAk.n !== akJwk.n || hclAk.e !== akJwk.e) refuse('ak-hcl-binding', 'AikPub is not the HCLAkPub of the runtime claims');
  const verifyAk = (data: Buffer, sig: Buffer) => cryptoVerify('sha256', data, ak.key, sig);

  // 4. The PCR quote.
  const quote = attestOf(req.tpm.pcrQuote, 'pcr-quote', 'PcrQuote');
  if (quote.attested.kind !== 'quote') refuse('pcr-quote', 'PcrQuote is not a quote');
  if (!verifyAk(req.tpm.pcrQuote, req.tpm.pcrSignature)) refuse('pcr-quote', 'PcrSignature does not verify with the AK');
  const sel = quote.attested.pcrSelect.filter((s) => s.pcrs.length > 0);
  if (sel.length !== 1 || sel[0].hash !== TPM_ALG.SHA256 || sel[0].pcrs.join(',') !== [...req.tpm.pcrSet].sort((a, b) => a - b).join(',')) {
    refuse('pcr-quote', 'the quote does not cover exactly the SHA-256 PCRs of PcrSet');
  }
  const ordered = [...req.tpm.pcrs].sort((a, b) => a.index - b.index);
  const digest = createHash('sha256').update(Buffer.concat(ordered.map((p) => p.digest))).digest();
  if (!digest.equals(quote.attested.pcrDigest)) refuse('pcr-quote', 'the PCR values sent do not match the quoted PCR digest');

  // 5. The ephemeral key: certified by the AK, and a key that can only decrypt, inside this TPM.
  const enc = rsaPublicOf(req.tpm.encKeyPub, 'EncKeyPub', 'enc-key-attributes');
  const certify = attestOf(req.tpm.encKeyCertifyInfo, 'enc-key-certify', 'EncKeyCertifyInfo');
  if (certify.attested.kind !== 'certify') refuse('enc-key-certify', 'EncKeyCertifyInfo is not a certification');
  if (!verifyAk(req.tpm.encKeyCertifyInfo, req.tpm.encKeyCertifyInfoSignature)) refuse('enc-key-certify', 'EncKeyCertifyInfoSignature does not verify with the AK');
  if (!certify.attested.name.equals(objectName(enc.tpmtBytes, enc.area.nameAlg))) refuse('enc-key-certify', 'the certified object is not EncKeyPub (Name mismatch)');
  const a = enc.area.objectAttributes;
  if (!(a & TPMA_OBJECT.decrypt) || a & TPMA_OBJECT.sign || a & TPMA_OBJECT.restricted || !(a & TPMA_OBJECT.fixedTPM) || enc.area.keyBits !== 2048) {
    refuse('enc-key-attributes', `EncKeyPub (attributes 0x${a.toString(16)}, ${enc.area.keyBits} bits) is not a fixedTPM RSA-2048 decryption-only key`);
  }
  return { verified, runtime, encKey: enc.key };
}

/** The §6 claim set (registered claims are added by the signer). */
/** The TEE claims of MAA's TDX EAT profile, from the verified quote's body. */
export function tdxTeeClaims(v: VerifiedTdQuote, runtime: Record<string, unknown>): Record<string, unknown> {
  const b = v.quote.body;
  const hex = (x: Buffer) => x.toString('hex');
  const debug = tdIsDebuggable(b.tdAttributes);
  return {
    'x-ms-attestation-type': 'tdxvm',
    'x-ms-compliance-status': debug ? NONCOMPLIANT_CVM : COMPLIANT_CVM,
    'x-ms-runtime': runtime,
    dbgstat: debug ? 'enabled' : 'disabled-since-boot',
    tdx_mrconfigid: hex(b.mrConfigId),
    tdx_mrowner: hex(b.mrOwner),
    tdx_mrownerconfig: hex(b.mrOwnerConfig),
    tdx_mrseam: hex(b.mrSeam),
    tdx_mrsignerseam: hex(b.mrSignerSeam),
    tdx_mrtd: hex(b.mrTd),
    tdx_report_data: hex(b.reportData),
    tdx_rtmr0: hex(b.rtmrs[0]),
    tdx_rtmr1: hex(b.rtmrs[1]),
    tdx_rtmr2: hex(b.rtmrs[2]),
    tdx_rtmr3: hex(b.rtmrs[3]),
    tdx_seam_attributes: hex(b.seamAttributes),
    tdx_td_attributes: hex(b.tdAttributes),
    tdx_td_attributes_debug: debug,
    tdx_tee_tcb_svn: hex(b.teeTcbSvn),
    tdx_xfam: hex(b.xfam),
  };
}

function snpTeeClaims(v: VerifiedReport, runtime: Record<string, unknown>, policyHash: string): Record<string, unknown> {
  const r = v.report;
  const debuggable = (r.policy & POLICY_DEBUG_BIT) !== 0n;
  const snp = claimsFromReport(r, { product: v.product, policyHash });
  const tee: Record<string, unknown> = {
    'x-ms-attestation-type': 'sevsnpvm',
    'x-ms-compliance-status': r.vmpl === 0 && !debuggable ? COMPLIANT_CVM : NONCOMPLIANT_CVM,
    'x-ms-runtime': runtime,
  };
  for (const [k, val] of Object.entries(snp)) if (k.startsWith('x-ms-sevsnpvm-')) tee[k] = val;
  return tee;
}

export function azureGuestClaims(req: ParsedAzureGuestRequest, v: VerifiedAzureGuest, policyHash: string): Record<string, unknown> {
  const vmConfig = (typeof v.runtime['vm-configuration'] === 'object' && v.runtime['vm-configuration'] !== null ? v.runtime['vm-configuration'] : {}) as Record<string, unknown>;
  const secureBoot = vmConfig['secure-boot'] === true;
  const tee = isTdx(v.verified) ? tdxTeeClaims(v.verified, v.runtime) : snpTeeClaims(v.verified, v.runtime, policyHash);
  const encJwk = v.encKey.export({ format: 'jwk' });
  return {
    secureboot: secureBoot,
    'x-ms-attestation-type': 'azurevm',
    'x-ms-azurevm-attestation-protocol-ver': '2.0',
    'x-ms-azurevm-attested-pcrs': [...req.tpm.pcrSet],
    'x-ms-azurevm-bootdebug-enabled': false,
    'x-ms-azurevm-dbvalidated': secureBoot,
    'x-ms-azurevm-dbxvalidated': secureBoot,
    'x-ms-azurevm-debuggersdisabled': true,
    'x-ms-azurevm-default-securebootkeysvalidated': secureBoot,
    'x-ms-azurevm-elam-enabled': false,
    'x-ms-azurevm-flightsigning-enabled': false,
    'x-ms-azurevm-hvci-policy': 0,
    'x-ms-azurevm-hypervisordebug-enabled': false,
    'x-ms-azurevm-is-windows': false,
    'x-ms-azurevm-kerneldebug-enabled': false,
    'x-ms-azurevm-osbuild': req.os.build,
    'x-ms-azurevm-osdistro': req.os.distro,
    'x-ms-azurevm-ostype': req.os.type,
    'x-ms-azurevm-osversion-major': req.os.versionMajor,
    'x-ms-azurevm-osversion-minor': req.os.versionMinor,
    'x-ms-azurevm-signingdisabled': true,
    'x-ms-azurevm-testsigning-enabled': false,
    ...(typeof vmConfig.vmUniqueId === 'string' ? { 'x-ms-azurevm-vmid': vmConfig.vmUniqueId } : {}),
    'x-ms-isolation-tee': tee,
    'x-ms-policy-hash': policyHash,
    'x-ms-runtime': {
      'client-payload': req.clientPayload,
      keys: [{ kid: TPM_KEY_KID, key_ops: ['encrypt'], kty: 'RSA', e: encJwk.e, n: encJwk.n }],
    },
    'x-ms-ver': '1.0',
  };
}

export interface AzureGuestSigning {
  key: { kid: string; privateKey: KeyObject };
  issuer: string;
  iat: number;
  lifetimeSeconds: number;
  jti: string;
  policyHash: string;
  /** Turn the signed JWT into another (fault injection). */
  mutate?: (jwt: string) => string;
}

/** Parse, verify, sign and seal: the `token` of the answer, and the JWT inside it (for the emulator's records). */
export async function answerAzureGuest(body: unknown, trust: AzureGuestTrust, s: AzureGuestSigning): Promise<{ token: string; jwt: string }> {
  let parsed: ParsedAzureGuestRequest;
  try {
    parsed = parseAzureGuestRequest(body);
  } catch (e) {
    if (e instanceof InvalidInputError) throw new MaaEmulatorRefusal('request-format', e.message, { cause: e });
    throw e;
  }
  const v = verifyAzureGuestEvidence(parsed, trust);
  let jwt = await new SignJWT(azureGuestClaims(parsed, v, s.policyHash))
    .setProtectedHeader({ alg: 'RS256', jku: `${s.issuer}/certs`, kid: s.key.kid, typ: 'JWT' })
    .setIssuer(s.issuer)
    .setIssuedAt(s.iat)
    .setNotBefore(s.iat)
    .setExpirationTime(s.iat + s.lifetimeSeconds)
    .setJti(s.jti)
    .sign(s.key.privateKey);
  if (s.mutate) jwt = s.mutate(jwt);
  return { token: sealEnvelope(jwt, v.encKey), jwt };
}

export function parseVtpmCaPems(pems: readonly string[]): X509Certificate[] {
  return pems.flatMap((p) => pemCertificatesToDer(p, 'vTPM CA').map((d, i) => certificateFromDer(d, `vTPM CA certificate ${i + 1}`)));
}
