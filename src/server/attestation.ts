/**
 * What the HTTP routes need from the layers below, behind one interface, so the app can be
 * started against real hardware, the simulator, or any EvidenceSource without knowing which.
 */
import type { AmdCertChain } from '../certs/types';
import type { Endpoint } from '../common/endpoint';

/** A report for the route /attest/raw; on an Azure CVM with the HCL report it is embedded in. */
export interface RawAttestation {
  report: Buffer;
  /** Azure CVM: the whole HCL report (its runtime claims carry the requested REPORT_DATA as user-data). */
  hclReport?: Buffer;
  /** Azure TDX CVM: the TD quote of the HCL report's TDREPORT (`report` is then the TDREPORT). */
  tdQuote?: Buffer;
}

export interface CombinedAttestation {
  report: Buffer;
  /** Azure CVM: the whole HCL report `report` is embedded in. */
  hclReport?: Buffer;
  /** SEV-SNP: the AMD chain of the report. Absent on TDX, whose quote carries its PCK chain. */
  chain?: AmdCertChain;
  /** Azure TDX CVM: the TD quote. */
  tdQuote?: Buffer;
  /** reference-info-base64 exactly as the platform provided it ('' when none). */
  uvmEndorsementsBase64: string;
}

export interface AttestationService {
  /**
   * A report whose REPORT_DATA is `reportData` (64 bytes); on an Azure CVM the HCL report whose claims'
   * user-data is `reportData` and whose embedded report's REPORT_DATA is sha256(claims).
   */
  rawReport(reportData: Buffer): Promise<RawAttestation>;
  /** Report plus the AMD chain matching its REPORTED_TCB and the UVM endorsement. */
  combined(reportData: Buffer): Promise<CombinedAttestation>;
  /**
   * An MAA token for fresh evidence binding `runtimeData` (REPORT_DATA = sha256(runtimeData)).
   * `maaEndpoint` is the request's endpoint, parsed once (the allowlist approved this value).
   */
  maaToken(maaEndpoint: Endpoint, runtimeData: Buffer, signal?: AbortSignal, opts?: { api?: MaaApi }): Promise<string>;
  /** One-line description of where evidence comes from, for /status and logs. */
  describe(): string;
  /** `aci` or `azure-cvm` (shown by /status). */
  readonly platform?: string;
  /** On an Azure CVM, the TEE: `sevsnp` or `tdx` (shown by /status). */
  readonly tee?: string;
}

/** Which MAA endpoint `/attest/maa` uses: the platform's default, or MAA's TDX platform endpoint on a TDX CVM. */
export type MaaApi = 'default' | 'TdxVm';

/** What POST /key/release needs. */
export interface KeyReleaseService {
  release(req: { maaEndpoint: Endpoint; akvEndpoint: Endpoint; kid: string; accessToken?: string }, signal?: AbortSignal): Promise<{ jwk: object; keyId: string }>;
}
