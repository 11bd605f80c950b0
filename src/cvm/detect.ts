/**
 * Is this an Azure confidential VM? Its vTPM (the resource-manager device, or a TCP endpoint given for
 * local use) holds the paravisor's HCL report at NV 0x01400001. Checked once at start-up by reading the
 * index's public area, so a VM without it (or a TPM the sidecar cannot open) stops start-up with the
 * reason, not the first request.
 */
import { access, constants } from 'node:fs/promises';
import { DeviceTransport, SwtpmTcpTransport, TpmClient, TpmError, type TpmTransport } from '../tpm';
import { HCL_REPORT_INDEX } from './nv-indices';

export type TpmEndpoint = { kind: 'device'; path: string } | { kind: 'tcp'; host: string; port: number };

/** `timeoutMs` bounds each command (default 30 s); past it the device or connection is reopened. */
export function tpmTransportFor(ep: TpmEndpoint, timeoutMs?: number): TpmTransport {
  const t = timeoutMs !== undefined ? { timeoutMs } : {};
  return ep.kind === 'device' ? new DeviceTransport(ep.path, t) : new SwtpmTcpTransport({ host: ep.host, port: ep.port, ...t });
}

export function describeTpmEndpoint(ep: TpmEndpoint): string {
  return ep.kind === 'device' ? ep.path : `tcp:${ep.host}:${ep.port}`;
}

export type CvmProbe = { found: true; tpm: TpmClient } | { found: false; looked: string };

/** A TPM client on `ep` when it holds the HCL index; otherwise what was looked for and why it is not there. */
export async function probeAzureCvm(ep: TpmEndpoint, timeoutMs?: number): Promise<CvmProbe> {
  const where = `${describeTpmEndpoint(ep)} NV index 0x01400001 (HCL report)`;
  if (ep.kind === 'device') {
    try {
      await access(ep.path, constants.F_OK);
    } catch {
      return { found: false, looked: `${where}: no ${ep.path}` };
    }
  }
  const tpm = new TpmClient(tpmTransportFor(ep, timeoutMs));
  try {
    await tpm.nvReadPublic(HCL_REPORT_INDEX);
    return { found: true, tpm };
  } catch (e) {
    await tpm.close().catch(() => undefined);
    const why = e instanceof TpmError && e.is('TPM_RC_HANDLE') ? 'the TPM has no such index (not an Azure confidential VM)' : (e as Error).message;
    return { found: false, looked: `${where}: ${why}` };
  }
}
