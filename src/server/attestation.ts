/**
 * What the HTTP routes need from the layers below, behind one interface, so the app can be
 * started against real hardware, the simulator, or any EvidenceSource without knowing which.
 */
import type { AmdCertChain } from '../certs/types';
import type { Endpoint } from '../common/endpoint';

export interface CombinedAttestation {
  report: Buffer;
  chain: AmdCertChain;
  /** reference-info-base64 exactly as the platform provided it ('' when none). */
  uvmEndorsementsBase64: string;
}

export interface AttestationService {
  /** A report whose REPORT_DATA is `reportData` (64 bytes). */
  rawReport(reportData: Buffer): Promise<Buffer>;
  /** Report plus the AMD chain matching its REPORTED_TCB and the UVM endorsement. */
  combined(reportData: Buffer): Promise<CombinedAttestation>;
  /**
   * An MAA token for fresh evidence binding `runtimeData` (REPORT_DATA = sha256(runtimeData)).
   * `maaEndpoint` is the request's endpoint, parsed once (the allowlist approved this value).
   */
  maaToken(maaEndpoint: Endpoint, runtimeData: Buffer, signal?: AbortSignal): Promise<string>;
  /** One-line description of where evidence comes from, for /status and logs. */
  describe(): string;
}

/** What POST /key/release needs. */
export interface KeyReleaseService {
  release(req: { maaEndpoint: Endpoint; akvEndpoint: Endpoint; kid: string; accessToken?: string }, signal?: AbortSignal): Promise<{ jwk: object; keyId: string }>;
}
