/**
 * Evidence from Azure's pre-upstream `/dev/sev` guest-message ioctl (5.x kernels of early
 * confidential ACI hosts). That ABI has no extended report, so `extended` is ignored: the
 * certificates come from the security context (THIM) instead.
 */
import type { Evidence, EvidenceSource, ReportRequest } from '../evidence';
import { DeviceLock, LoadOptions, loadAddon, toDeviceError } from '../native';
import { checkReportLength, checkReportRequest } from './sev-guest';

export class LegacySevSource implements EvidenceSource {
  readonly kind = 'sev' as const;
  readonly description: string;
  private readonly lock = new DeviceLock();

  constructor(
    readonly devicePath = '/dev/sev',
    private readonly load: LoadOptions = {},
  ) {
    this.description = `${devicePath} (legacy)`;
  }

  async getReport(req: ReportRequest): Promise<Evidence> {
    const { reportData, vmpl } = checkReportRequest(req);
    const addon = loadAddon(this.load);
    return this.lock.run(async () => {
      const report = await addon.getLegacyReport(this.devicePath, reportData, vmpl).catch((e: unknown) => {
        throw toDeviceError(e);
      });
      return { report: checkReportLength(report, this.devicePath) };
    });
  }
}
