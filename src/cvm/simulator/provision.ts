/**
 * TEST ONLY: turn a blank swtpm into a simulated Azure confidential VM's vTPM, with our own TPM client:
 * AK at 0x81000003, its certificate (from the test-only vTPM CA) in NV 0x01C101D0, and the HCL report
 * (signed by the simulated AMD chain, HCLAkPub = the AK) in NV 0x01400001. Idempotent across swtpm
 * restarts (the AK persists; the indices are rewritten).
 */
import { randomUUID } from 'node:crypto';
import { rsaKeyOf, TPM_RH, TPMA_NV, TpmClient, TpmError, akTemplate } from '../../tpm';
import type { TpmTransport } from '../../tpm/transport';
import { SimulatedPlatform, type SimulatedPlatformOptions } from '../../snp/simulator';
import { AK_CERT_INDEX, AK_HANDLE, HCL_REPORT_INDEX, USER_DATA_SIZE } from '../nv-indices';
import type { SimulatedTdxPlatform } from '../../tdx/simulator';
import { ParavisorTransport, SIMULATED_HCL_INDEX_SIZE, SimulatedParavisor } from './paravisor';
import { createTestOnlyVtpmCa, issueTestOnlyAkCertificate, type TestOnlyVtpmCa } from './test-only-vtpm-ca';

const NV_ATTRS = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD;
/** Size of the simulated AK certificate index (Azure's is 4096; swtpm allows 2048). */
export const SIMULATED_AK_CERT_INDEX_SIZE = 2048;

export interface ProvisionOptions {
  platform?: SimulatedPlatform;
  /** Options for a new platform when none is given (e.g. a debug policy). */
  platformOptions?: SimulatedPlatformOptions;
  ca?: TestOnlyVtpmCa;
  /** `missing`: define the certificate index but leave it unwritten, as right after an Azure deployment. */
  akCertificate?: 'provisioned' | 'missing';
  vmUniqueId?: string;
  vmpl?: number;
  /** Simulate an Intel TDX CVM with this TD module (HCL report type 4) instead of SEV-SNP. */
  tdx?: SimulatedTdxPlatform;
}

export interface SimulatedCvm {
  platform: SimulatedPlatform;
  ca: TestOnlyVtpmCa;
  paravisor: SimulatedParavisor;
  /** The TDX machine when the CVM is a TDX one (its quoting enclave serves IMDS /acc/tdquote). */
  tdx?: SimulatedTdxPlatform;
  akCertDer?: Buffer;
  vmUniqueId: string;
  /** Wrap a transport to this TPM so user-data writes regenerate the report. */
  transport(inner: TpmTransport): ParavisorTransport;
}

async function redefine(tpm: TpmClient, index: number, size: number): Promise<void> {
  try {
    await tpm.nvUndefineSpace(index);
  } catch (e) {
    if (!(e instanceof TpmError && e.is('TPM_RC_HANDLE'))) throw e;
  }
  await tpm.nvDefineSpace(index, size, NV_ATTRS);
}

async function ensureAk(tpm: TpmClient): Promise<void> {
  try {
    await tpm.readPublic(AK_HANDLE);
    return;
  } catch (e) {
    if (!(e instanceof TpmError && e.is('TPM_RC_HANDLE'))) throw e;
  }
  const ak = await tpm.createPrimary(TPM_RH.OWNER, akTemplate());
  await tpm.withHandle(ak.handle, (h) => tpm.evictControl(h, AK_HANDLE));
}

export async function provisionSimulatedCvm(tpm: TpmClient, opts: ProvisionOptions = {}): Promise<SimulatedCvm> {
  const platform = opts.platform ?? new SimulatedPlatform(opts.platformOptions);
  const ca = opts.ca ?? createTestOnlyVtpmCa();
  const vmUniqueId = opts.vmUniqueId ?? randomUUID().toUpperCase();
  await ensureAk(tpm);
  const akPublic = rsaKeyOf((await tpm.readPublic(AK_HANDLE)).public);

  await redefine(tpm, AK_CERT_INDEX, SIMULATED_AK_CERT_INDEX_SIZE);
  let akCertDer: Buffer | undefined;
  if ((opts.akCertificate ?? 'provisioned') === 'provisioned') {
    akCertDer = issueTestOnlyAkCertificate(ca, akPublic, vmUniqueId);
    // The index is bigger than the certificate; the rest is zero, as on Azure.
    await tpm.nvWrite(AK_CERT_INDEX, Buffer.concat([akCertDer, Buffer.alloc(SIMULATED_AK_CERT_INDEX_SIZE - akCertDer.length)]));
  }

  const paravisor = new SimulatedParavisor({ platform, akPublic, vmUniqueId, ...(opts.vmpl !== undefined ? { vmpl: opts.vmpl } : {}), ...(opts.tdx ? { tdx: opts.tdx } : {}) });
  await redefine(tpm, HCL_REPORT_INDEX, SIMULATED_HCL_INDEX_SIZE);
  await paravisor.writeReport(tpm, Buffer.alloc(USER_DATA_SIZE));

  return {
    platform,
    ca,
    paravisor,
    ...(opts.tdx ? { tdx: opts.tdx } : {}),
    ...(akCertDer ? { akCertDer } : {}),
    vmUniqueId,
    transport: (inner) => new ParavisorTransport(inner, paravisor),
  };
}
