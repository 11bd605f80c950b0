/**
 * The Azure confidential VM implementation of Attester (src/maa/attester.ts): guest attestation through
 * the vTPM (guest-attestation.ts) to MAA's `/attest/AzureGuest`. The caller's runtime data is bound twice:
 * as the client payload MAA echoes in `x-ms-runtime.client-payload["runtime-data"]` (base64 of the exact
 * bytes), and as sha256(runtime data) + 32 zero bytes in the HCL user data, which the embedded SEV-SNP
 * report binds through the runtime claims (`x-ms-isolation-tee.x-ms-runtime.user-data`).
 *
 * The TPM steps run under `tpmGate` (the sidecar's device gate: one TPM user at a time, bounded queue);
 * the MAA call does not hold it. The token is verified (signature, issuer) and must name our certified
 * ephemeral key as TpmEphemeralEncryptionKey and echo the client payload unchanged.
 */
import { InvalidInputError } from '../common/errors';
import type { Endpoint } from '../common/endpoint';
import type { FetchLike } from '../common/http';
import { attemptHook, NO_TELEMETRY, type Telemetry } from '../common/telemetry';
import type { AmdCertChain } from '../certs/types';
import type { Attester } from '../maa/attester';
import { postAzureGuest } from '../maa/azure-guest-client';
import { serializeAzureGuestRequest, type AzureGuestRequestInput } from '../maa/azure-guest-request';
import { MAA_UPSTREAM } from '../maa/client';
import { verifyMaaToken, type JwksCache } from '../maa/verify-token';
import type { AttestationReport } from '../snp/report';
import { reportDataFor } from '../snp/report';
import { StaleKekError } from '../akv/kek';
import { checkGuestToken, GuestAttestation, isolationOf, readOsRelease, readTcgLog, TPM_KEY_KID, tpmPartOf, type LoadedEphemeralKey } from './guest-attestation';
import { isTdxHcl } from './hcl';
import type { LoadedKey } from './tpm-kek';
import { atTpmStep } from './tpm-step';

/** The client-payload key carrying the caller's runtime data (MAA base64-encodes the value). */
export const RUNTIME_DATA_PAYLOAD_KEY = 'runtime-data';

export interface Gate {
  run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T>;
}

export interface AzureGuestAttesterOptions {
  guest: GuestAttestation;
  /** The VCEK chain for the embedded report (the collateral provider over IMDS THIM). */
  chainFor(report: AttestationReport, signal?: AbortSignal): Promise<AmdCertChain>;
  /** TDX CVMs: the TD quote of a TDREPORT (IMDS /acc/tdquote). */
  tdQuote?: (tdReport: Buffer, signal?: AbortSignal) => Promise<Buffer>;
  fetch: FetchLike;
  userAgent?: string;
  tpmGate?: Gate;
  telemetry?: Telemetry;
  jwksCache?: JwksCache;
  os?: AzureGuestRequestInput['os'];
  /** Read the TCG log once per attestation (default the securityfs file, empty when unreadable). */
  tcgLog?: () => Buffer;
  /**
   * The KEK source (src/cvm/tpm-kek.ts) sharing tpmGate. Runtime data that is a TPM KEK's JWKS is attested
   * with the source's loaded key, the one the KEK names, so the token and the KEK cannot disagree; when that
   * key is no longer the vTPM's for the current PCR0–7 the KEK is stale and the pipeline takes a fresh one.
   */
  keks?: { loaded(): Promise<LoadedKey> };
}

/** The modulus of runtime data that is a TPM KEK's JWKS (`{"keys":[{kid: TpmEphemeralEncryptionKey, n}]}`). */
function kekModulus(runtimeData: Buffer): string | undefined {
  try {
    const keys = (JSON.parse(runtimeData.toString('utf8')) as { keys?: { kid?: unknown; n?: unknown }[] }).keys;
    const k = Array.isArray(keys) && keys.length === 1 ? keys[0] : undefined;
    return k?.kid === TPM_KEY_KID && typeof k.n === 'string' ? k.n : undefined;
  } catch {
    return undefined;
  }
}

const DIRECT: Gate = { run: (fn) => fn() };

export class AzureGuestAttester implements Attester {
  private readonly os: AzureGuestRequestInput['os'];
  constructor(private readonly opts: AzureGuestAttesterOptions) {
    this.os = opts.os ?? readOsRelease();
  }

  async attest(endpoint: Endpoint, runtimeData: Buffer, signal?: AbortSignal): Promise<string> {
    const text = runtimeData.toString('utf8');
    if (!Buffer.from(text, 'utf8').equals(runtimeData)) {
      throw new InvalidInputError('ERR_RUNTIME_DATA', 'runtime_data must be UTF-8 on an Azure confidential VM (MAA echoes it as a client-payload string)');
    }
    const clientPayload = { [RUNTIME_DATA_PAYLOAD_KEY]: text };
    const telemetry = this.opts.telemetry ?? NO_TELEMETRY;
    const gate = this.opts.tpmGate ?? DIRECT;
    const { guest } = this.opts;

    const kekN = this.opts.keks ? kekModulus(runtimeData) : undefined;
    /** The KEK's key, still the vTPM's for the current PCR0–7 (re-derived by the source when not). Under the gate. */
    const kekKey = async (): Promise<LoadedEphemeralKey | undefined> => {
      if (kekN === undefined || !this.opts.keks) return undefined;
      const key = await this.opts.keks.loaded();
      if (key.n !== kekN) {
        throw new StaleKekError(`CVM attestation: the KEK's key is no longer the vTPM's key for the current PCR0-7 (PCR0-7 changed or the TPM was reset since the KEK was taken)`);
      }
      return key;
    };
    const ev = await gate.run(
      () =>
        telemetry.stage('device', () =>
          atTpmStep('vTPM evidence (HCL refresh, AK, quote, ephemeral key)', async () => {
            const ephemeralKey = await kekKey();
            return guest.collect({ userData: reportDataFor(runtimeData), ...(ephemeralKey ? { ephemeralKey } : {}) });
          }),
        ),
      signal,
    );
    const hcl = ev.hcl;
    const tdQuote = this.opts.tdQuote;
    const isolation = await telemetry.stage('collateral', () =>
      isolationOf(hcl, {
        ...(isTdxHcl(hcl) ? {} : { collateral: () => this.opts.chainFor(hcl.report, signal) }),
        ...(tdQuote ? { tdQuote: (r: Buffer) => tdQuote(r, signal) } : {}),
      }),
    );
    const body = serializeAzureGuestRequest({
      os: this.os,
      tcgLog: (this.opts.tcgLog ?? readTcgLog)(),
      clientPayload,
      tpm: tpmPartOf(ev),
      isolation,
    });
    return telemetry.stage('maa', async () => {
      const envelope = await postAzureGuest(
        endpoint.origin,
        body,
        { fetch: this.opts.fetch, ...(this.opts.userAgent ? { userAgent: this.opts.userAgent } : {}), onAttempt: attemptHook(telemetry, MAA_UPSTREAM) },
        signal,
      );
      const token = await gate.run(
        () =>
          atTpmStep('opening the MAA answer in the vTPM', async () => {
            const loaded = await kekKey();
            return guest.openEnvelope(envelope, ev.encKeyPub, {}, loaded);
          }),
        signal,
      );
      const claims = await verifyMaaToken(token, { authority: endpoint.origin, fetch: this.opts.fetch, ...(this.opts.jwksCache ? { jwksCache: this.opts.jwksCache } : {}) });
      checkGuestToken(claims, ev.encKeyPub, clientPayload);
      return token;
    });
  }
}
