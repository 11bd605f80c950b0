/**
 * TEST ONLY: the simulated paravisor (HCL). On Azure the paravisor writes the HCL report into NV
 * 0x01400001 at boot and regenerates it when the guest writes user data to NV 0x01400002. swtpm cannot
 * react to an NV write, so the simulation sits where a real vTPM's owner would: in the TPM command
 * stream. ParavisorTransport wraps the transport to swtpm; after it forwards a successful NV_Write to
 * 0x01400002 it reads the new user data and rewrites 0x01400001 *before* handing the NV_Write response
 * back, so the guest's own code (VtpmEvidence, unchanged) sees what it would see on Azure. The guest
 * still polls, as it must on Azure. ParavisorProxy exposes the same thing as a TCP port for processes
 * (`skr local`), which then talk to it exactly as to swtpm.
 */
import * as net from 'node:net';
import { KeyObject } from 'node:crypto';
import { TPM_CC, TpmClient } from '../../tpm';
import { readTpmCommands } from '../../tpm/command-stream';
import { HEADER_BYTES, Serializer, type TpmTransport } from '../../tpm/transport';
import { SimulatedPlatform } from '../../snp/simulator';
import { buildHclReport, buildTdxHclReport, hclReportData } from '../hcl';
import type { SimulatedTdxPlatform } from '../../tdx/simulator';
import { HCL_REPORT_INDEX, USER_DATA_INDEX } from '../nv-indices';

/** swtpm's TPM_PT_NV_INDEX_MAX: the simulated HCL index is this size (Azure's is 2600). */
export const SIMULATED_HCL_INDEX_SIZE = 2048;

export interface SimulatedParavisorOptions {
  platform: SimulatedPlatform;
  /** The vTPM AK public key: published as `HCLAkPub`. */
  akPublic: KeyObject;
  vmUniqueId: string;
  /** VMPL the embedded report claims (0 on Azure; others for negative tests). */
  vmpl?: number;
  /** A TDX CVM: the report is of type 4, its TDREPORT written by this simulated TD module. */
  tdx?: SimulatedTdxPlatform;
}

export class SimulatedParavisor {
  readonly platform: SimulatedPlatform;
  private readonly akJwk: { n: string; e: string };
  /** Number of reports written (boot + one per user-data write). */
  reportsWritten = 0;

  constructor(private readonly opts: SimulatedParavisorOptions) {
    this.platform = opts.platform;
    const j = opts.akPublic.export({ format: 'jwk' });
    this.akJwk = { n: String(j.n), e: String(j.e) };
  }

  /** Compact runtime claims, in Azure's key order. HCLEkPub is left out: both keys do not fit swtpm's 2048-byte index. */
  claimsFor(userData: Buffer): Buffer {
    return Buffer.from(
      JSON.stringify({
        keys: [{ kid: 'HCLAkPub', key_ops: ['sign'], kty: 'RSA', e: this.akJwk.e, n: this.akJwk.n }],
        'vm-configuration': { 'console-enabled': false, 'secure-boot': true, 'tpm-enabled': true, 'tpm-persisted': true, vmUniqueId: this.opts.vmUniqueId },
        'user-data': userData.toString('hex').toUpperCase(),
      }),
    );
  }

  /** The HCL index content for `userData`: an SNP report signed by the simulated AMD chain, or a TDREPORT (TDX). */
  report(userData: Buffer): Buffer {
    const claimsBytes = this.claimsFor(userData);
    if (this.opts.tdx) return buildTdxHclReport({ tdReport: this.opts.tdx.tdReport(hclReportData(claimsBytes)), claimsBytes, padTo: SIMULATED_HCL_INDEX_SIZE });
    const snpReport = this.platform.signReport({ reportData: hclReportData(claimsBytes), vmpl: this.opts.vmpl ?? 0 });
    return buildHclReport({ snpReport, claimsBytes, padTo: SIMULATED_HCL_INDEX_SIZE });
  }

  /** Write the report for `userData` into NV 0x01400001 (defined by provisioning). */
  async writeReport(tpm: TpmClient, userData: Buffer): Promise<void> {
    await tpm.nvWrite(HCL_REPORT_INDEX, this.report(userData));
    this.reportsWritten++;
  }
}

function isUserDataWrite(cmd: Buffer): boolean {
  return cmd.length >= 18 && cmd.readUInt32BE(6) === TPM_CC.NV_Write && cmd.readUInt32BE(14) === USER_DATA_INDEX;
}

/** A transport whose TPM behaves like Azure's vTPM behind the paravisor (see the file comment). */
export class ParavisorTransport implements TpmTransport {
  readonly description: string;
  private readonly queue = new Serializer();
  private readonly ownClient: TpmClient;

  constructor(
    private readonly inner: TpmTransport,
    private readonly paravisor: SimulatedParavisor,
  ) {
    this.description = `${inner.description} (simulated paravisor)`;
    this.ownClient = new TpmClient(inner);
  }

  send(command: Buffer): Promise<Buffer> {
    return this.queue.run(async () => {
      const res = await this.inner.send(command);
      if (isUserDataWrite(command) && res.length >= HEADER_BYTES && res.readUInt32BE(6) === 0) {
        const userData = await this.ownClient.nvRead(USER_DATA_INDEX);
        await this.paravisor.writeReport(this.ownClient, userData);
      }
      return res;
    });
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * ParavisorTransport on a loopback TCP port speaking swtpm's raw command protocol. It multiplexes its
 * clients over its one connection to swtpm (which serves a single connection at a time), command by
 * command. close() also closes that transport.
 */
export class ParavisorProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(private readonly transport: TpmTransport) {
    this.server = net.createServer((s) => this.serve(s));
  }

  async listen(port = 0): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  private serve(s: net.Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => s.destroy());
    // A failing TPM behind the proxy (send throws): the client sees its connection drop, as with swtpm itself.
    readTpmCommands(s, async (cmd) => {
      const res = await this.transport.send(cmd);
      if (!s.destroyed) s.write(res);
      return true;
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    // The proxy owns its connection to the TPM: swtpm serves one connection at a time.
    await this.transport.close();
  }
}
