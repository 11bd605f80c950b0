/**
 * Which platform the sidecar runs on, decided once at start-up (never a fallback to simulation):
 *   aci        the SEV-SNP device of an ACI/AKS container group (configfs-tsm, /dev/sev-guest, /dev/sev);
 *   azure-cvm  the vTPM of an Azure confidential VM (HCL report at NV 0x01400001 on /dev/tpmrm0 or --tpm);
 *   auto       the first of those found, else a refusal naming everything looked for.
 */
import { DeviceError, SkrError } from '../common/errors';
import { probeAzureCvm, type CvmProbe } from '../cvm/detect';
import { detectEvidenceSource, type DetectOptions } from '../snp/detect';
import type { EvidenceSource } from '../snp/evidence';
import type { TpmClient } from '../tpm';
import { DEFAULT_TPM_DEVICE, type PlatformChoice, type TpmEndpoint } from './config';

export type DetectedPlatform = { name: 'aci'; evidence: EvidenceSource } | { name: 'azure-cvm'; tpm: TpmClient };

export interface PlatformDetectOptions extends DetectOptions {
  /** The Azure CVM's TPM when not given in the configuration (tests point this at a temp path). */
  tpmDevicePath?: string;
  /** Per TPM command (limits.tpmCommandTimeoutMs). */
  tpmTimeoutMs?: number;
}

export async function detectPlatform(choice: PlatformChoice, tpm: TpmEndpoint | undefined, opts: PlatformDetectOptions = {}): Promise<DetectedPlatform> {
  const tpmEndpoint: TpmEndpoint = tpm ?? { kind: 'device', path: opts.tpmDevicePath ?? DEFAULT_TPM_DEVICE };
  const cvm = async (): Promise<CvmProbe> => probeAzureCvm(tpmEndpoint, opts.tpmTimeoutMs);
  if (choice === 'aci') return { name: 'aci', evidence: await detectEvidenceSource(opts) };
  if (choice === 'azure-cvm') {
    const p = await cvm();
    if (!p.found) throw new DeviceError('ERR_NO_DEVICE', `--platform azure-cvm: no Azure confidential VM vTPM: looked at ${p.looked}`);
    return { name: 'azure-cvm', tpm: p.tpm };
  }
  // auto: an explicit --tpm says which platform is meant; otherwise the SEV-SNP devices first.
  let aciMissing: string;
  if (!tpm) {
    try {
      return { name: 'aci', evidence: await detectEvidenceSource(opts) };
    } catch (e) {
      if (!(e instanceof SkrError && e.code === 'ERR_NO_DEVICE')) throw e;
      aciMissing = e.message;
    }
  } else {
    aciMissing = 'SEV-SNP devices not looked for (--tpm given)';
  }
  const p = await cvm();
  if (p.found) return { name: 'azure-cvm', tpm: p.tpm };
  throw new DeviceError('ERR_NO_DEVICE', `no platform found: ${aciMissing}; ${p.looked}. Use --platform aci|azure-cvm to say which, or --simulate for local development`);
}
