/**
 * HCL evidence from the vTPM: read and parse NV 0x01400001, read the AK certificate, and refresh the
 * report with user data (write NV 0x01400002, then re-read until the claims' `user-data` is what was
 * written: the paravisor regenerates the report, and nothing says when, so we poll, bounded).
 * The user-data index is VM-global: refresh and read run under one lock.
 */
import { DeviceError } from '../common/errors';
import { TPMA_NV, TpmClient, TpmError } from '../tpm';
import { Serializer } from '../tpm/transport';
import { claimsUserData, MAX_HCL_BYTES, parseAnyHclReport, type CvmHcl } from './hcl';
import { AK_CERT_INDEX, HCL_REPORT_INDEX, USER_DATA_INDEX, USER_DATA_SIZE } from './nv-indices';

export const AK_CERT_NOT_PROVISIONED_HINT = 'the vTPM AK certificate is not provisioned yet (normal in the first minutes after deployment): retry later';
/** Attributes Azure's clients define the user-data index with. */
export const USER_DATA_ATTRIBUTES = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD;

export interface VtpmEvidenceOptions {
  /** How long to wait for the paravisor to regenerate the report after a user-data write. Default 5 s. */
  refreshTimeoutMs?: number;
  /** Pause between re-reads. Default 100 ms. */
  pollIntervalMs?: number;
}

export class VtpmEvidence {
  private readonly lock = new Serializer();
  constructor(
    readonly tpm: TpmClient,
    private readonly opts: VtpmEvidenceOptions = {},
  ) {}

  /** The raw HCL index content, size-checked before it is read. */
  readHclBytes(): Promise<Buffer> {
    return this.lock.run(() => this.readHclUnlocked());
  }

  private async readHclUnlocked(): Promise<Buffer> {
    const { public: pub } = await this.tpm.nvReadPublic(HCL_REPORT_INDEX);
    if (pub.dataSize > MAX_HCL_BYTES) {
      throw new DeviceError('ERR_HCL_REPORT', `NV index 0x01400001 is ${pub.dataSize} bytes, more than the ${MAX_HCL_BYTES} an HCL report can be`);
    }
    return this.tpm.nvRead(HCL_REPORT_INDEX, { size: pub.dataSize });
  }

  /** The HCL report of either TEE (SEV-SNP report or TDX TDREPORT inside). */
  async readHclReport(): Promise<{ raw: Buffer; hcl: CvmHcl }> {
    const raw = await this.readHclBytes();
    return { raw, hcl: parseAnyHclReport(raw).hcl };
  }

  /** The whole AK certificate index (Microsoft's client sends all of it, padding included). */
  async readAkCertificate(): Promise<Buffer> {
    try {
      return await this.tpm.nvRead(AK_CERT_INDEX);
    } catch (e) {
      if (e instanceof TpmError && (e.is('TPM_RC_NV_UNINITIALIZED') || e.is('TPM_RC_HANDLE'))) {
        throw e.withHint(AK_CERT_NOT_PROVISIONED_HINT, 'reading the AK certificate (NV 0x01c101d0)');
      }
      throw e;
    }
  }

  /**
   * Write 64 bytes of user data and return the regenerated report whose claims carry them
   * (`user-data` = their upper-case hex). Fails with ERR_HCL_USER_DATA_STALE when the report does not
   * follow within refreshTimeoutMs: never returns a report bound to other user data.
   */
  refreshWithUserData(userData: Buffer): Promise<{ raw: Buffer; hcl: CvmHcl }> {
    if (userData.length !== USER_DATA_SIZE) throw new RangeError(`user data must be ${USER_DATA_SIZE} bytes, got ${userData.length}`);
    return this.lock.run(async () => {
      await this.ensureUserDataIndex();
      await this.tpm.nvWrite(USER_DATA_INDEX, userData);
      const want = userData.toString('hex').toUpperCase();
      const timeout = this.opts.refreshTimeoutMs ?? 5000;
      const interval = this.opts.pollIntervalMs ?? 100;
      const until = Date.now() + timeout;
      let last: string | undefined;
      for (let attempt = 0; ; attempt++) {
        const raw = await this.readHclUnlocked();
        const hcl = parseAnyHclReport(raw).hcl;
        last = claimsUserData(hcl.claims);
        if (last !== undefined && last.toUpperCase() === want) return { raw, hcl };
        if (Date.now() >= until) {
          throw new DeviceError(
            'ERR_HCL_USER_DATA_STALE',
            `the HCL report still carries ${last === undefined ? 'no user-data' : 'other user-data'} ${timeout} ms (${attempt + 1} reads) after writing NV 0x01400002: the paravisor did not regenerate it`,
          );
        }
        await new Promise((r) => setTimeout(r, interval));
      }
    });
  }

  /** Define NV 0x01400002 (64 bytes) when absent; re-create it when its size is wrong. */
  private async ensureUserDataIndex(): Promise<void> {
    try {
      const { public: pub } = await this.tpm.nvReadPublic(USER_DATA_INDEX);
      if (pub.dataSize === USER_DATA_SIZE) return;
      await this.tpm.nvUndefineSpace(USER_DATA_INDEX);
    } catch (e) {
      if (!(e instanceof TpmError && e.is('TPM_RC_HANDLE'))) throw e;
    }
    await this.tpm.nvDefineSpace(USER_DATA_INDEX, USER_DATA_SIZE, USER_DATA_ATTRIBUTES);
  }
}
