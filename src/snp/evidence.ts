/**
 * The one interface every way of obtaining a hardware report implements: the upstream
 * `/dev/sev-guest` device, Azure's legacy `/dev/sev`, configfs-tsm, and the simulated platform.
 * Callers never know which one they hold; tests inject fakes through this same interface.
 */

/** Entry of the GUID-keyed certificate table returned by SNP_GET_EXT_REPORT or configfs `auxblob`. */
export interface CertTableEntry {
  /** Lowercase canonical GUID, e.g. `63da758d-e664-4564-adc5-f4b93be8accd`. */
  guid: string;
  /** `vcek` | `ask` | `ark` | `vlek` for the known GUIDs, else `unknown`. */
  kind: 'vcek' | 'ask' | 'ark' | 'vlek' | 'unknown';
  /** DER certificate bytes. */
  data: Buffer;
}

/**
 * The host's certificates for the chip, as THIM and ACI's `host-amd-cert-base64` carry them (JSON,
 * exactly as Azure serves it). Defined here, beside the evidence it comes with, so that the simulated
 * host can produce it without reaching up into src/certs, which parses and verifies it.
 */
export interface ThimCertificates {
  vcekCert: string;
  certificateChain: string;
  /** 16 hex digits, the TCB the VCEK was issued for. */
  tcbm: string;
  /** Seconds, as a decimal string. */
  cacheControl?: string;
}

export interface Evidence {
  /** The raw 1184-byte ATTESTATION_REPORT. */
  report: Buffer;
  /** Certificates the host supplied with an extended report, when there were any. */
  certTable?: CertTableEntry[];
  /**
   * Azure confidential VM: the whole HCL report (vTPM NV 0x01400001) `report` is embedded in. There
   * REPORT_DATA is sha256 of the runtime claims, whose `user-data` is the requested REPORT_DATA.
   */
  hclReport?: Buffer;
  /** Azure TDX confidential VM: `report` is the HCL report's TDREPORT and this is its TD quote (IMDS). */
  tdQuote?: Buffer;
}

export interface ReportRequest {
  /** Exactly 64 bytes of REPORT_DATA. */
  reportData: Buffer;
  /** VMPL to request (0–3); default 0. */
  vmpl?: number;
  /** Ask for the host's certificate table too (extended report); sources without one ignore it. */
  extended?: boolean;
}

export type EvidenceKind = 'configfs-tsm' | 'sev-guest' | 'sev' | 'simulated' | 'azure-cvm-vtpm';

export interface EvidenceSource {
  readonly kind: EvidenceKind;
  /** Human-readable location, e.g. `/dev/sev-guest` or `simulated (test AMD chain)`. */
  readonly description: string;
  getReport(req: ReportRequest): Promise<Evidence>;
}
