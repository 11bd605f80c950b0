/**
 * Guest attestation on an Azure confidential VM (CVM-PROTOCOL §1 steps 1–9), through our TPM client:
 *   HCL report (optionally refreshed with user data) → AK certificate and public key → PCR0–7 and a
 *   quote by the AK → the ephemeral key (NULL hierarchy, PolicyPCR over PCR0–7) certified by the AK and
 *   flushed → POST /attest/AzureGuest → re-derive the key, RSA_Decrypt (RSAES) under a PolicyPCR
 *   session → AES-GCM open → verify the JWT and that its TpmEphemeralEncryptionKey is our key.
 * Every transient handle and session is flushed in a finally. Timings are kept per step.
 */
import * as fs from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { VerificationError } from '../common/errors';
import type { FetchLike } from '../common/http';
import { registerSecret } from '../common/redact';
import type { AmdCertChain } from '../certs/types';
import { maaBaseUrl } from '../maa/client';
import { MaaEnvelopeError, openSealedEnvelope, type InnerKeyResult } from '../maa/azure-guest-envelope';
import { postAzureGuest, type AzureGuestClientOptions } from '../maa/azure-guest-client';
import { serializeAzureGuestRequest, type AzureGuestRequestInput } from '../maa/azure-guest-request';
import { verifyMaaToken, type JwksCache } from '../maa/verify-token';
import { ephemeralKeyTemplate, PCRS_0_7, policyAuth, policyPcrDigest, rsaKeyOf, TPM_RH, TPM_SE, TpmClient, TpmError, type CreatedPrimary } from '../tpm';
import { parsePublic2b } from '../tpm/structures';
import { isTdxHcl, type CvmHcl } from './hcl';
import { AK_HANDLE } from './nv-indices';
import { VtpmEvidence } from './vtpm-evidence';

export const TPM_KEY_KID = 'TpmEphemeralEncryptionKey';
const MAX_TCG_LOG = 256 * 1024;

export type Timings = Record<string, number>;

async function timed<T>(t: Timings, name: string, fn: () => Promise<T>): Promise<T> {
  const start = performance.now();
  try {
    return await fn();
  } finally {
    t[name] = Math.round((performance.now() - start) * 10) / 10;
  }
}

/** NAME and VERSION_ID of /etc/os-release (bounded read); Linux 1.0 when unreadable, as the C++ client does. */
export function readOsRelease(path = '/etc/os-release'): AzureGuestRequestInput['os'] {
  let text = '';
  try {
    const fd = fs.openSync(path, 'r');
    try {
      const buf = Buffer.alloc(16 * 1024);
      text = buf.subarray(0, fs.readSync(fd, buf, 0, buf.length, 0)).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // absent: defaults below
  }
  const get = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?$`, 'm').exec(text)?.[1]?.slice(0, 64);
  const [maj, min] = (get('VERSION_ID') ?? '').split('.').map((x) => Number.parseInt(x, 10));
  return { type: 'Linux', distro: get('NAME') ?? 'Linux', versionMajor: Number.isInteger(maj) && maj > 0 ? maj : 1, versionMinor: Number.isInteger(min) && min >= 0 ? min : 0 };
}

/** The TCG event log when readable (root + securityfs), else empty. Bounded. */
export function readTcgLog(path = '/sys/kernel/security/tpm0/binary_bios_measurements'): Buffer {
  try {
    const fd = fs.openSync(path, 'r');
    try {
      const parts: Buffer[] = [];
      let total = 0;
      for (;;) {
        const b = Buffer.alloc(64 * 1024);
        const n = fs.readSync(fd, b, 0, b.length, null);
        if (n === 0) break;
        total += n;
        if (total > MAX_TCG_LOG) return Buffer.alloc(0);
        parts.push(b.subarray(0, n));
      }
      return Buffer.concat(parts);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return Buffer.alloc(0);
  }
}

export interface CollectOptions {
  /** 64 bytes written to NV 0x01400002 first; the report then binds them. */
  userData?: Buffer;
  /**
   * An ephemeral key the caller already holds loaded (the TPM KEK of src/cvm/tpm-kek.ts, created with the
   * same template for the current PCRs): certified as it is and left loaded, instead of creating one.
   */
  ephemeralKey?: LoadedEphemeralKey;
}

/** A loaded TpmEphemeralEncryptionKey: its transient handle and TPM2B_PUBLIC. */
export interface LoadedEphemeralKey {
  handle: number;
  outPublic: Buffer;
}

export interface CollectedEvidence {
  /** SEV-SNP or TDX (isTdxHcl). */
  hcl: CvmHcl;
  akCert: Buffer;
  akPub: Buffer;
  pcrs: { index: number; digest: Buffer }[];
  quote: { attest: Buffer; signature: Buffer };
  /** TPM2B_PUBLIC of the ephemeral key: what MAA puts in the token and what decrypts its answer. */
  encKeyPub: Buffer;
  certify: { attest: Buffer; signature: Buffer };
}

/** A debug-level log line (the sidecar's logger); envelope details go here, never to the caller. */
export type DebugLog = (message: string, meta: Record<string, unknown>) => void;

export class GuestAttestation {
  readonly evidence: VtpmEvidence;
  constructor(
    readonly tpm: TpmClient,
    evidence?: VtpmEvidence,
    private readonly debug?: DebugLog,
  ) {
    this.evidence = evidence ?? new VtpmEvidence(tpm);
  }

  /** Create the ephemeral key for the current PCR0–7; the caller flushes it. */
  async createEphemeralKey(): Promise<{ key: CreatedPrimary; pcrs: Map<number, Buffer> }> {
    const pcrs = await this.tpm.pcrRead(PCRS_0_7.hash, PCRS_0_7.pcrs);
    const key = await this.tpm.createPrimary(TPM_RH.NULL, ephemeralKeyTemplate(policyPcrDigest(PCRS_0_7, [...pcrs.values()])));
    return { key, pcrs };
  }

  /** Steps 1–6: everything the AzureGuest request needs from the vTPM. */
  async collect(opts: CollectOptions = {}, t: Timings = {}): Promise<CollectedEvidence> {
    const { hcl } = await timed(t, opts.userData ? 'tpm.hclRefresh' : 'tpm.hclRead', () =>
      opts.userData ? this.evidence.refreshWithUserData(opts.userData) : this.evidence.readHclReport(),
    );
    const akCert = await timed(t, 'tpm.akCertRead', () => this.evidence.readAkCertificate());
    const ak = await timed(t, 'tpm.akReadPublic', () => this.tpm.readPublic(AK_HANDLE));
    // Fail here, not at MAA, when the AK is not the one the paravisor reports.
    const hclAk = hcl.claims['keys'];
    const akN = rsaKeyOf(ak.public).export({ format: 'jwk' }).n;
    const claimed = Array.isArray(hclAk) ? (hclAk as { kid?: unknown; n?: unknown }[]).find((k) => k.kid === 'HCLAkPub')?.n : undefined;
    if (claimed !== akN) throw new VerificationError('ak-hcl-binding', 'ak-hcl-binding: the AK at 0x81000003 is not the HCLAkPub of the HCL report');
    const quote = await timed(t, 'tpm.quote', () => this.tpm.quote(AK_HANDLE, [PCRS_0_7]));
    const given = opts.ephemeralKey;
    const { key, pcrs } = given
      ? { key: given, pcrs: await timed(t, 'tpm.pcrRead', () => this.tpm.pcrRead(PCRS_0_7.hash, PCRS_0_7.pcrs)) }
      : await timed(t, 'tpm.createEphemeralKey', () => this.createEphemeralKey());
    const certify = await timed(t, 'tpm.certify', () =>
      given ? this.tpm.certify(given.handle, AK_HANDLE) : this.tpm.withHandle(key.handle, (h) => this.tpm.certify(h, AK_HANDLE)),
    );
    return {
      hcl,
      akCert,
      akPub: ak.outPublic,
      pcrs: [...pcrs.entries()].map(([index, digest]) => ({ index, digest })),
      quote: { attest: quote.attestBytes, signature: quote.signature.sig },
      encKeyPub: key.outPublic,
      certify: { attest: certify.attestBytes, signature: certify.signature.sig },
    };
  }

  /**
   * Step 9: open MAA's envelope. The key is re-derived from the current PCRs; when it is not the key
   * the evidence certified (PCR change, reboot) that is said plainly instead of a TPM decrypt error.
   * Every failure that depends on the envelope's content gives one identical error (openSealedEnvelope);
   * its detail goes to the `debug` sink given at construction only.
   */
  async openEnvelope(token: string, encKeyPub: Buffer, t: Timings = {}, loaded?: LoadedEphemeralKey): Promise<string> {
    // A key the caller keeps loaded is used (and left loaded) as it is; otherwise it is re-derived and flushed.
    const key = loaded ?? (await timed(t, 'tpm.rederiveEphemeralKey', () => this.createEphemeralKey())).key;
    const use = <T>(fn: (h: number) => Promise<T>): Promise<T> => (loaded ? fn(loaded.handle) : this.tpm.withHandle(key.handle, fn));
    return use(async (h) => {
      if (!key.outPublic.equals(encKeyPub)) {
        throw new MaaEnvelopeError('maa-envelope-key', 'the re-derived TPM key is not the one attested: PCR0-7 changed or the VM rebooted since attestation; attest again');
      }
      const decrypt = (encryptedInnerKey: Buffer): Promise<InnerKeyResult> =>
        timed(t, 'tpm.decryptInnerKey', async () => {
          const s = await this.tpm.startAuthSession(TPM_SE.POLICY);
          return this.tpm.withHandle(s.handle, async (sh) => {
            try {
              await this.tpm.policyPcr(sh, [PCRS_0_7]);
              return { key: await this.tpm.rsaDecrypt(h, policyAuth(sh), encryptedInnerKey, { scheme: 'rsaes' }) };
            } catch (e) {
              if (!(e instanceof TpmError)) throw e;
              // The key's state, not the ciphertext: said as it is.
              if (STATE_RCS.has(e.rcName)) throw new MaaEnvelopeError('maa-envelope-key', `the vTPM key cannot decrypt any more: ${e.message}`, e);
              return { failed: `the TPM could not unwrap MAA's key: ${e.message}` };
            }
          });
        });
      return openSealedEnvelope(token, decrypt, (detail) => this.debug?.('the MAA answer did not open', { detail }));
    });
  }
}

/** RSA_Decrypt refusals that come from the key or the PCRs, whatever the ciphertext. */
const STATE_RCS = new Set(['TPM_RC_POLICY_FAIL', 'TPM_RC_HANDLE', 'TPM_RC_REFERENCE_H0', 'TPM_RC_AUTH_UNAVAILABLE', 'TPM_RC_PCR_CHANGED']);

export interface AttestGuestOptions {
  tpm: TpmClient;
  evidence?: VtpmEvidence;
  /** MAA host (`sharedeus.eus.attest.azure.net`, `host:port` or an https origin). */
  maaEndpoint: string;
  /**
   * The VCEK chain for the embedded report: on Azure, IMDS THIM (`/metadata/THIM/amd/certification`,
   * e.g. src/certs LocalThimSource or the collateral provider).
   */
  collateral?: AmdCertChain;
  /** TDX CVMs: the TD quote of the HCL report's TDREPORT (IMDS /acc/tdquote, src/tdx/imds-quote). */
  tdQuote?: (tdReport: Buffer) => Promise<Buffer>;
  /** Echoed by MAA in x-ms-runtime.client-payload (values base64-encoded on the wire). */
  clientPayload?: Record<string, string>;
  /** Attest this loaded ephemeral key instead of creating one (see CollectOptions). */
  ephemeralKey?: LoadedEphemeralKey;
  userData?: Buffer;
  os?: AzureGuestRequestInput['os'];
  tcgLog?: Buffer;
  fetch?: FetchLike;
  client?: AzureGuestClientOptions;
  jwksCache?: JwksCache;
  now?: Date;
  /** Where the detail of an envelope that did not open goes (never to the caller). */
  debug?: DebugLog;
}

export interface GuestAttestationResult {
  /** The verified MAA JWT. */
  token: string;
  claims: Record<string, unknown>;
  encKeyPub: Buffer;
  timings: Timings;
}

function tpmKeyOfClaims(claims: Record<string, unknown>): { n?: unknown; e?: unknown } | undefined {
  const rt = claims['x-ms-runtime'];
  const keys = typeof rt === 'object' && rt !== null ? (rt as { keys?: unknown }).keys : undefined;
  if (!Array.isArray(keys)) return undefined;
  return keys.find((k: unknown) => typeof k === 'object' && k !== null && (k as { kid?: unknown }).kid === TPM_KEY_KID) as { n?: unknown; e?: unknown } | undefined;
}

/**
 * Check what only the guest can: the token's top-level TpmEphemeralEncryptionKey is the key we certified
 * (Key Vault will wrap to it), and the client payload came back unchanged.
 */
export function checkGuestToken(claims: Record<string, unknown>, encKeyPub: Buffer, clientPayload?: Record<string, string>): void {
  const k = tpmKeyOfClaims(claims);
  if (!k) throw new VerificationError('maa-token-tpm-key', `maa-token-tpm-key: the token has no ${TPM_KEY_KID} in x-ms-runtime.keys`);
  const ours = rsaKeyOf(parsePublic2b(encKeyPub, 'EncKeyPub').area).export({ format: 'jwk' });
  if (k.n !== ours.n || k.e !== ours.e) {
    throw new VerificationError('maa-token-tpm-key', `maa-token-tpm-key: the token's ${TPM_KEY_KID} is not the key this TPM certified: Key Vault would wrap to a key we cannot use`);
  }
  if (clientPayload !== undefined) {
    const rt = claims['x-ms-runtime'] as Record<string, unknown>;
    const expected = Object.fromEntries(Object.entries(clientPayload).map(([key, v]) => [key, Buffer.from(v, 'utf8').toString('base64')]));
    if (!isDeepStrictEqual(rt['client-payload'] ?? {}, expected)) {
      throw new VerificationError('maa-token-client-payload', 'maa-token-client-payload: x-ms-runtime.client-payload is not what was sent');
    }
  }
}

/**
 * The AzureGuest isolation evidence for the HCL report's TEE: the SNP report with its VCEK chain, or the TD
 * quote of the TDREPORT (IMDS), each with the exact runtime-claims bytes.
 */
export async function isolationOf(
  hcl: CvmHcl,
  src: { collateral?: AmdCertChain | (() => Promise<AmdCertChain>); tdQuote?: (tdReport: Buffer) => Promise<Buffer> },
): Promise<AzureGuestRequestInput['isolation']> {
  if (isTdxHcl(hcl)) {
    if (!src.tdQuote) throw new VerificationError('tdx-quote-source', 'tdx-quote-source: the HCL report is a TDX one and no TD quote source (IMDS /acc/tdquote) is configured');
    return { tdQuote: await src.tdQuote(hcl.tdReportBytes), runtimeClaims: hcl.claimsBytes };
  }
  if (!src.collateral) throw new VerificationError('chain-format', 'chain-format: the HCL report is an SEV-SNP one and no VCEK chain is configured');
  const chain = typeof src.collateral === 'function' ? await src.collateral() : src.collateral;
  return { snpReport: hcl.snpReportBytes, vcekCertChainPem: chain.vcekPem + chain.chainPem, runtimeClaims: hcl.claimsBytes };
}

/** The whole guest attestation: collect, call MAA, open, verify. */
/** The request's `tpm` part from what the vTPM produced (one mapping, shared with the tests' forged requests). */
export function tpmPartOf(ev: CollectedEvidence): AzureGuestRequestInput['tpm'] {
  return {
    akCert: ev.akCert,
    akPub: ev.akPub,
    pcrQuote: ev.quote.attest,
    pcrSignature: ev.quote.signature,
    pcrs: ev.pcrs,
    encKeyPub: ev.encKeyPub,
    encKeyCertifyInfo: ev.certify.attest,
    encKeyCertifyInfoSignature: ev.certify.signature,
  };
}

export async function attestGuest(o: AttestGuestOptions): Promise<GuestAttestationResult> {
  const t: Timings = {};
  const total = performance.now();
  const ga = new GuestAttestation(o.tpm, o.evidence, o.debug);
  const ev = await ga.collect({ ...(o.userData ? { userData: o.userData } : {}), ...(o.ephemeralKey ? { ephemeralKey: o.ephemeralKey } : {}) }, t);
  const isolation = await timed(t, isTdxHcl(ev.hcl) ? 'imds.tdQuote' : 'collateral', () => isolationOf(ev.hcl, { collateral: o.collateral, tdQuote: o.tdQuote }));
  const body = serializeAzureGuestRequest({
    os: o.os ?? readOsRelease(),
    tcgLog: o.tcgLog ?? readTcgLog(),
    clientPayload: o.clientPayload ?? {},
    tpm: tpmPartOf(ev),
    isolation,
  });
  const envelope = await timed(t, 'maa.attest', () => postAzureGuest(o.maaEndpoint, body, { ...(o.client ?? {}), ...(o.fetch ? { fetch: o.fetch } : {}) }));
  const token = await ga.openEnvelope(envelope, ev.encKeyPub, t, o.ephemeralKey);
  // The MAA token is a secret like any other the process holds: redacted wherever it is echoed.
  registerSecret(token);
  const claims = await timed(t, 'maa.verifyToken', () =>
    verifyMaaToken(token, {
      authority: maaBaseUrl(o.maaEndpoint),
      ...(o.fetch ? { fetch: o.fetch } : {}),
      ...(o.jwksCache ? { jwksCache: o.jwksCache } : {}),
      ...(o.now ? { now: o.now } : {}),
    }),
  );
  checkGuestToken(claims, ev.encKeyPub, o.clientPayload ?? {});
  t.total = Math.round((performance.now() - total) * 10) / 10;
  return { token, claims, encKeyPub: ev.encKeyPub, timings: t };
}
