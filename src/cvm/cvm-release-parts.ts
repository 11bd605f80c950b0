/**
 * The confidential-VM parts of the release pipeline (docs/architecture.md, "Where a new platform plugs
 * in"): an Attester that runs guest attestation (attestGuest: HCL report + vTPM evidence →
 * /attest/AzureGuest → envelope opened in the TPM → verified token) and the TPM KEK source. With these
 * two the KeyReleasePipeline runs on a CVM unchanged.
 *
 * AzureGuest takes no runtime data: the token's top-level x-ms-runtime.keys carries the vTPM key MAA saw
 * certified. So the attester checks that this key is the KEK's (runtimeData's) key; when it is not, the
 * vTPM's key changed between the KEK and the attestation (PCR change, TPM reset): a StaleKekError.
 */
import { randomBytes } from 'node:crypto';
import type { AmdCertChain } from '../certs/types';
import type { Endpoint } from '../common/endpoint';
import { VerificationError } from '../common/errors';
import type { FetchLike } from '../common/http';
import { StaleKekError } from '../akv/kek';
import type { Attester } from '../maa/attester';
import type { AzureGuestClientOptions } from '../maa/azure-guest-client';
import type { AzureGuestRequestInput } from '../maa/azure-guest-request';
import type { JwksCache } from '../maa/verify-token';
import type { TpmClient } from '../tpm';
import { Serializer } from '../tpm/transport';
import { attestGuest, TPM_KEY_KID, type Timings } from './guest-attestation';
import { PCRS_0_7, policyPcrDigest } from '../tpm';
import { tokenTpmKeyModulus, TpmKekSource, type LoadedKey, type TpmLock } from './tpm-kek';

export interface CvmAttesterOptions {
  tpm: TpmClient;
  /** The lock shared with the TPM KEK source (a Serializer, or the sidecar's TPM gate). */
  lock: TpmLock;
  /** The VCEK chain of the HCL report's SNP report: IMDS THIM on Azure (e.g. LocalThimSource.fetch). */
  collateral: (signal?: AbortSignal) => Promise<AmdCertChain>;
  /** TDX CVMs: the TD quote of a TDREPORT (IMDS /acc/tdquote); with it the VCEK chain is never fetched. */
  tdQuote?: (tdReport: Buffer, signal?: AbortSignal) => Promise<Buffer>;
  /** Outbound HTTPS for MAA (and its JWKS). */
  fetch?: FetchLike;
  client?: AzureGuestClientOptions;
  jwksCache?: JwksCache;
  /** Defaults: /etc/os-release and the TCG log when readable. */
  os?: AzureGuestRequestInput['os'];
  tcgLog?: Buffer;
  /** Timings of each attestation (first-release cost: key creation, quote, certify, MAA). */
  onTimings?: (t: Timings) => void;
  /**
   * The KEK source whose loaded key is the one to attest: certified and used to open MAA's answer as it
   * is, instead of two more key generations in the TPM. Without it attestGuest derives its own.
   */
  keks?: TpmKekSource;
}

/** The runtime data's key modulus (the KEK's JWKS `{"keys":[jwk]}`). */
function runtimeKeyModulus(runtimeData: Buffer): string | undefined {
  try {
    const keys = (JSON.parse(runtimeData.toString('utf8')) as { keys?: { n?: unknown }[] }).keys;
    return Array.isArray(keys) && typeof keys[0]?.n === 'string' ? keys[0].n : undefined;
  } catch {
    return undefined;
  }
}

export class CvmAttester implements Attester {
  constructor(private readonly opts: CvmAttesterOptions) {}

  private currentKey(keks: TpmKekSource, kekN: string): Promise<LoadedKey> {
    return loadedCurrentKey(this.opts.tpm, keks, kekN);
  }

  async attest(endpoint: Endpoint, runtimeData: Buffer, signal?: AbortSignal): Promise<string> {
    const kekN = runtimeKeyModulus(runtimeData);
    if (kekN === undefined) throw new VerificationError('maa-token-tpm-key', 'CVM attestation: the runtime data holds no RSA key (expected the TPM KEK\'s JWKS)');
    const o = this.opts;
    // Fetched outside the TPM lock; a TDX CVM needs none (its quote comes from IMDS after the HCL read).
    const collateral: AmdCertChain | undefined = o.tdQuote ? undefined : await o.collateral(signal);
    const tdQuote = o.tdQuote;
    const result = await o.lock.run(async () => {
      const ephemeralKey = o.keks ? await this.currentKey(o.keks, kekN) : undefined;
      return attestGuest({
        tpm: o.tpm,
        maaEndpoint: endpoint.origin,
        ...(collateral ? { collateral } : {}),
        ...(tdQuote ? { tdQuote: (r: Buffer) => tdQuote(r, signal) } : {}),
        // A fresh nonce per attestation, echoed (and checked) in x-ms-runtime.client-payload.
        clientPayload: { nonce: randomBytes(16).toString('hex') },
        ...(o.fetch ? { fetch: o.fetch } : {}),
        ...(o.client ? { client: o.client } : {}),
        ...(o.jwksCache ? { jwksCache: o.jwksCache } : {}),
        ...(o.os ? { os: o.os } : {}),
        ...(o.tcgLog ? { tcgLog: o.tcgLog } : {}),
        ...(ephemeralKey ? { ephemeralKey } : {}),
      });
    });
    o.onTimings?.(result.timings);
    if (tokenTpmKeyModulus(result.token) !== kekN) {
      throw new StaleKekError(`CVM attestation: the token's ${TPM_KEY_KID} is not the KEK's key: the vTPM's key changed since the KEK was taken (PCR0-7 changed or the TPM was reset)`);
    }
    return result.token;
  }
}

/** The KEK source's loaded key, when it is still the KEK's key and bound to the current PCR0–7. Under the lock. */
async function loadedCurrentKey(tpm: TpmClient, keks: TpmKekSource, kekN: string): Promise<LoadedKey> {
  const key = await keks.loaded();
  const pcrs = await tpm.pcrRead(PCRS_0_7.hash, PCRS_0_7.pcrs);
  if (key.n !== kekN || !policyPcrDigest(PCRS_0_7, [...pcrs.values()]).equals(key.authPolicy)) {
    if (key.n === kekN) await keks.forget(key.n);
    throw new StaleKekError(`CVM attestation: the KEK's key is no longer the vTPM's key for the current PCR0-7 (PCR0-7 changed or the TPM was reset since the KEK was taken)`);
  }
  return key;
}

export interface CvmReleaseParts {
  attester: CvmAttester;
  keks: TpmKekSource;
  /** Flush the loaded TPM key (the TPM client itself is the caller's). */
  close(): Promise<void>;
}

/** The attester and KEK source of a CVM, sharing one TPM lock. */
export function cvmReleaseParts(opts: Omit<CvmAttesterOptions, 'lock'> & { lock?: TpmLock }): CvmReleaseParts {
  const lock = opts.lock ?? new Serializer();
  const keks = new TpmKekSource(opts.tpm, lock);
  return { attester: new CvmAttester({ keks, ...opts, lock }), keks, close: () => keks.close() };
}
