/**
 * Evidence from the upstream Linux `/dev/sev-guest` device (kernel ≥ 5.19): SNP_GET_REPORT, or
 * SNP_GET_EXT_REPORT when the caller wants the host's certificate table too.
 */
import { DeviceError, InvalidInputError } from '../../common/errors';
import { parseCertTable } from '../cert-table';
import type { Evidence, EvidenceSource, ReportRequest } from '../evidence';
import { DeviceLock, LoadOptions, loadAddon, toDeviceError } from '../native';
import { REPORT_SIZE } from '../report';

/** Validate a request before it reaches the device; returns the VMPL to use. */
export function checkReportRequest(req: ReportRequest): { reportData: Buffer; vmpl: number } {
  const rd = req.reportData as unknown;
  if (!(rd instanceof Uint8Array) || rd.length !== 64) {
    const got = rd instanceof Uint8Array ? `${rd.length} bytes` : typeof rd;
    throw new InvalidInputError('ERR_REPORT_DATA_LENGTH', `REPORT_DATA must be exactly 64 bytes, got ${got}`);
  }
  const vmpl = req.vmpl ?? 0;
  if (!Number.isInteger(vmpl) || vmpl < 0 || vmpl > 3) {
    throw new InvalidInputError('ERR_VMPL', `VMPL must be an integer 0..3, got ${String(vmpl)}`);
  }
  return { reportData: Buffer.from(rd), vmpl };
}

/** A device answer that is not a report-sized buffer is a device fault, not a report. */
export function checkReportLength(report: Buffer, device: string): Buffer {
  if (report.length !== REPORT_SIZE) {
    throw new DeviceError('ERR_DEVICE_RESPONSE', `${device} returned a ${report.length}-byte report, expected ${REPORT_SIZE}`);
  }
  return report;
}

export class SevGuestSource implements EvidenceSource {
  readonly kind = 'sev-guest' as const;
  readonly description: string;
  private readonly lock = new DeviceLock();

  constructor(
    readonly devicePath = '/dev/sev-guest',
    private readonly load: LoadOptions = {},
  ) {
    this.description = devicePath;
  }

  async getReport(req: ReportRequest): Promise<Evidence> {
    const { reportData, vmpl } = checkReportRequest(req);
    const addon = loadAddon(this.load);
    return this.lock.run(async () => {
      if (!req.extended) {
        const report = await addon.getReport(this.devicePath, reportData, vmpl).catch((e: unknown) => {
          throw toDeviceError(e);
        });
        return { report: checkReportLength(report, this.devicePath) };
      }
      const { report, certs } = await addon.getExtReport(this.devicePath, reportData, vmpl).catch((e: unknown) => {
        throw toDeviceError(e);
      });
      let certTable;
      try {
        certTable = parseCertTable(certs);
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        throw new DeviceError('ERR_DEVICE_RESPONSE', `${this.devicePath} returned a malformed ${why}`, { cause: e });
      }
      const evidence: Evidence = { report: checkReportLength(report, this.devicePath) };
      if (certTable.length > 0) evidence.certTable = certTable;
      return evidence;
    });
  }
}
