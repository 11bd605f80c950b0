/**
 * The Azure confidential VM as an EvidenceSource: the requested 64 bytes of REPORT_DATA go into the vTPM
 * user-data index (NV 0x01400002); the paravisor regenerates the HCL report (NV 0x01400001), whose runtime
 * claims carry them as `user-data` and whose embedded SEV-SNP report binds sha256(claims) in its own
 * REPORT_DATA. So the binding chain for a caller's runtime data is:
 *   runtime_data → sha256 (+32 zero bytes) = user-data → runtime claims → sha256 = SNP REPORT_DATA → VCEK signature.
 * The evidence is the embedded report plus the whole HCL report; nothing is returned unless the
 * claims carry exactly the requested user data and hash to REPORT_DATA (never other or older evidence).
 * On a TDX CVM the hardware report is the TDREPORT; TdQuoteEvidenceSource (outside the device gate: it is an
 * IMDS call, not a TPM one) adds its TD quote from IMDS (`/acc/tdquote`), without which a TDREPORT proves
 * nothing off the machine.
 */
import { DeviceError } from '../common/errors';
import type { Evidence, EvidenceSource, ReportRequest } from '../snp/evidence';
import { checkClaimsBinding, hclTeeOf, isTdxHcl } from './hcl';
import { USER_DATA_SIZE } from './nv-indices';
import { atTpmStep } from './tpm-step';
import type { VtpmEvidence } from './vtpm-evidence';

export class HclEvidenceSource implements EvidenceSource {
  readonly kind = 'azure-cvm-vtpm' as const;
  readonly description: string;

  constructor(private readonly vtpm: VtpmEvidence) {
    this.description = `Azure confidential VM vTPM HCL report (${vtpm.tpm.transport.description})`;
  }

  async getReport(req: ReportRequest): Promise<Evidence> {
    if (req.reportData.length !== USER_DATA_SIZE) throw new RangeError(`report data must be ${USER_DATA_SIZE} bytes`);
    if ((req.vmpl ?? 0) !== 0) {
      throw new DeviceError('ERR_DEVICE_ARGUMENT', `the paravisor's HCL report is always VMPL 0; VMPL ${req.vmpl} cannot be requested on an Azure confidential VM`);
    }
    const { raw, hcl } = await atTpmStep('vTPM user-data refresh (write NV 0x01400002, read NV 0x01400001)', () => this.vtpm.refreshWithUserData(req.reportData));
    // The paravisor is trusted for this, but a report whose claims do not hash to REPORT_DATA is no evidence at all.
    const reportData = isTdxHcl(hcl) ? hcl.tdReport.reportData : hcl.report.reportData;
    try {
      checkClaimsBinding(reportData, hcl.claimsBytes, hcl.varData.hashType);
    } catch (e) {
      throw new DeviceError('ERR_HCL_REPORT', `the vTPM returned an HCL report that fails ${(e as Error).message}`, { cause: e });
    }
    return { report: isTdxHcl(hcl) ? hcl.tdReportBytes : hcl.snpReportBytes, hclReport: raw };
  }
}

/** TDX CVMs: the inner source's evidence plus the TD quote of its TDREPORT (`report`). SEV-SNP evidence passes through. */
export class TdQuoteEvidenceSource implements EvidenceSource {
  readonly kind: EvidenceSource['kind'];
  readonly description: string;

  constructor(
    private readonly inner: EvidenceSource,
    private readonly tdQuote: (tdReport: Buffer) => Promise<Buffer>,
  ) {
    this.kind = inner.kind;
    this.description = `${inner.description}, TD quotes from IMDS /acc/tdquote`;
  }

  async getReport(req: ReportRequest): Promise<Evidence> {
    const e = await this.inner.getReport(req);
    if (!e.hclReport || hclTeeOf(e.hclReport) !== 'tdx' || e.tdQuote) return e;
    return { ...e, tdQuote: await this.tdQuote(e.report) };
  }
}
