/**
 * Wiring for `skr local`: the simulated platform, the IMDS, MAA, Key Vault and Managed HSM
 * emulators, and the sidecar pointed at them, all on 127.0.0.1. The sidecar runs the production
 * code paths; only its endpoints, CA and identity origin differ from a real deployment.
 *
 * `platform: 'azure-cvm'`: instead of the simulated SEV-SNP device, a real software TPM (swtpm, one
 * child process) provisioned as a simulated Azure confidential VM (src/cvm/simulator), behind the
 * simulated paravisor's TCP proxy; the MAA emulator trusts the local vTPM CA and serves
 * /attest/AzureGuest; the sidecar runs `--platform azure-cvm --tpm tcp:127.0.0.1:<proxy>`.
 * `tee: 'tdx'` makes it an Intel TDX CVM: a simulated TD module writes the HCL report's TDREPORT (type 4),
 * the IMDS emulator's /acc/tdquote is served by the simulated quoting enclave (TEST-ONLY Intel-like chain),
 * and the MAA emulator trusts that chain's root explicitly, verifying the quote with src/tdx.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ReleaseTuning } from '../akv/release-tuning';
import type { ReleaseEnc } from '../akv/wrap';
import { loadOrCreateLocalCa } from '../emulators/ca';
import { startImdsEmulator, type ImdsEmulator } from '../emulators/imds';
import { startMaaEmulator, type MaaEmulator } from '../emulators/maa';
import { startVaultEmulator, type VaultEmulator } from '../emulators/akv';
import { loadServerConfig, releaseTuningFromProcess, type ServerLimits } from '../server/config';
import { createLogger, type LogLevel, type Logger } from '../server/logger';
import { startSidecar, type RunningSidecar } from '../server/sidecar';
import { SimulatedPlatform, TEST_ONLY_UVM_ROOT_SHA256 } from '../snp/simulator';
import { SimulatedTdxPlatform, TEST_ONLY_INTEL_ROOT_PEM } from '../tdx/simulator';
import { ParavisorProxy, provisionSimulatedCvm, startSwtpmProcess, type SimulatedCvm } from '../cvm/simulator';
import { SwtpmTcpTransport, swtpmPowerOn, TpmClient } from '../tpm';

export type LocalPlatform = 'aci' | 'azure-cvm';
/** The CPU vendor of a simulated `azure-cvm`: AMD SEV-SNP (default) or Intel TDX. */
export type LocalTee = 'sevsnp' | 'tdx';

/** What `skr local` writes to its state file: how other tools (and people) reach the stack. */
export interface LocalState {
  /** `aci` (simulated SEV-SNP container group) or `azure-cvm` (swtpm as a simulated confidential VM). */
  platform: LocalPlatform;
  /** azure-cvm: which TEE the simulated CVM has (absent in state files of older versions: SEV-SNP). */
  tee?: LocalTee;
  sidecarUrl: string;
  maaEndpoint: string;
  vaultEndpoint: string;
  hsmEndpoint: string;
  imdsUrl: string;
  caCertPath: string;
  securityContextDir: string;
  /** sha256 of the simulated security policy: what a release policy pins as x-ms-sevsnpvm-hostdata. */
  hostData: string;
  pid: number;
  /** With a gRPC port: the key provider's `127.0.0.1:PORT` (what an ocicrypt key-provider config names). */
  grpcTarget?: string;
  /** azure-cvm: the simulated paravisor's TPM port (`tcp:127.0.0.1:PORT`) and the swtpm behind it. */
  tpm?: { endpoint: string; swtpmPid: number; swtpmStateDir: string; swtpmCtrlPort: number };
}

/**
 * A simulated VM reboot of an `azure-cvm` stack: swtpm is reset through its control port (PCRs cleared,
 * a new NULL seed) and TPM2_Startup(CLEAR) is sent through the paravisor proxy, as the firmware would;
 * NV (AK certificate, HCL report) persists. The sidecar keeps its connection and finds out when its TPM
 * key is gone. Used by tests and `skr demo`.
 */
export async function rebootSimulatedCvm(tpm: NonNullable<LocalState['tpm']>): Promise<void> {
  const port = /^tcp:127\.0\.0\.1:(\d+)$/.exec(tpm.endpoint)?.[1];
  if (port === undefined) throw new Error(`reboot: the vTPM endpoint ${tpm.endpoint.slice(0, 64)} is not tcp:127.0.0.1:PORT`);
  await swtpmPowerOn({ port: tpm.swtpmCtrlPort });
  const c = new TpmClient(new SwtpmTcpTransport({ port: Number(port) }));
  try {
    await c.startup();
  } finally {
    await c.close();
  }
}

export interface LocalStackOptions {
  stateDir: string;
  port?: number;
  logLevel?: LogLevel;
  logger?: Logger;
  /** Wrapping-key pool and MAA token reuse of the sidecar (default: its defaults / env). */
  release?: ReleaseTuning;
  /** Sidecar limits (deadline, slots, ...) over the defaults; tests shorten the deadline. */
  limits?: Partial<ServerLimits>;
  /** Default aci. */
  platform?: LocalPlatform;
  /** azure-cvm: `sevsnp` (default) or `tdx`. */
  tee?: LocalTee;
  /** `enc` of the sidecar's vault releases on azure-cvm (`skr local` passes SKR_RELEASE_ENC; default RSA_AES_KEY_WRAP_256). */
  releaseEnc?: ReleaseEnc;
  /**
   * azure-cvm, tests only: the TPM endpoint the sidecar uses, given the simulated paravisor's
   * (`tcp:127.0.0.1:PORT`): a hostile proxy or a fake device in between. Default: the paravisor's.
   */
  sidecarTpm?: (paravisorEndpoint: string) => Promise<string>;
  /** Also serve the gRPC key provider on this port (0: any free one) beside the HTTP API. */
  grpcPort?: number;
}

export interface LocalStack {
  state: LocalState;
  platform: SimulatedPlatform;
  sidecar: RunningSidecar;
  maa: MaaEmulator;
  imds: ImdsEmulator;
  vault: VaultEmulator;
  hsm: VaultEmulator;
  /** azure-cvm: the provisioned simulated CVM (its vTPM CA, paravisor). */
  cvm?: SimulatedCvm;
  /** azure-cvm: a simulated VM reboot (rebootSimulatedCvm). */
  reboot(): Promise<void>;
  close(): Promise<void>;
}

export async function startLocalStack(opts: LocalStackOptions): Promise<LocalStack> {
  const dir = path.resolve(opts.stateDir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const logger = opts.logger ?? createLogger({ level: opts.logLevel ?? 'warn' });
  const ca = loadOrCreateLocalCa(dir);
  const platform = new SimulatedPlatform();
  const started: { close(): Promise<void> }[] = [];
  const onCvm = opts.platform === 'azure-cvm';
  const tdx = onCvm && opts.tee === 'tdx' ? new SimulatedTdxPlatform() : undefined;
  try {
    let cvm: SimulatedCvm | undefined;
    let tpm: LocalState['tpm'];
    if (onCvm) {
      const swtpm = await startSwtpmProcess();
      started.push({ close: () => swtpm.stop() });
      // One connection to swtpm (it serves one at a time), owned by the proxy; provisioning uses it first.
      const inner = new SwtpmTcpTransport({ port: swtpm.port });
      started.push({ close: () => inner.close() });
      cvm = await provisionSimulatedCvm(new TpmClient(inner), { platform, ...(tdx ? { tdx } : {}) });
      const proxy = new ParavisorProxy(cvm.transport(inner));
      const proxyPort = await proxy.listen(0);
      started.push(proxy);
      tpm = { endpoint: `tcp:127.0.0.1:${proxyPort}`, swtpmPid: swtpm.pid, swtpmStateDir: swtpm.stateDir, swtpmCtrlPort: swtpm.ctrlPort };
    }
    const imds = await startImdsEmulator({
      stateDir: path.join(dir, 'imds'),
      thim: () => platform.thimCertificates(),
      ...(tdx ? { tdQuote: (r: Buffer) => tdx.quote(r) } : {}),
    });
    started.push(imds);
    const maa = await startMaaEmulator({
      ca,
      stateDir: path.join(dir, 'maa'),
      trustedArkPem: [platform.arkPem],
      trustedUvmRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256],
      ...(cvm ? { trustedVtpmCaPem: [cvm.ca.certPem] } : {}),
      ...(tdx ? { trustedIntelRootPem: [TEST_ONLY_INTEL_ROOT_PEM] } : {}),
    });
    started.push(maa);
    const accessTokens = { publicKey: imds.publicKey, issuer: imds.issuer };
    const vault = await startVaultEmulator({ flavour: 'vault', ca, stateDir: path.join(dir, 'vault'), accessTokens });
    started.push(vault);
    const hsm = await startVaultEmulator({ flavour: 'hsm', ca, stateDir: path.join(dir, 'hsm'), accessTokens });
    started.push(hsm);

    const sidecarTpm = onCvm && tpm ? ((await opts.sidecarTpm?.(tpm.endpoint)) ?? tpm.endpoint) : undefined;
    const base = loadServerConfig(
      sidecarTpm ? { port: String(opts.port ?? 8080), platform: 'azure-cvm', tpm: sidecarTpm } : { port: String(opts.port ?? 8080), simulate: true },
      {},
    );
    const config = {
      ...base,
      logLevel: opts.logLevel ?? base.logLevel,
      limits: { ...base.limits, ...opts.limits },
      releaseEnc: opts.releaseEnc ?? base.releaseEnc,
      extraCaPem: [ca.certPem],
      imdsEndpoint: imds.url,
      managedHsmEndpoints: [hsm.endpoint],
      loopbackVaultEndpoints: [vault.endpoint, hsm.endpoint],
      // Exactly these emulators, by host and port: not all of loopback.
      allowedMaa: [...base.allowedMaa, maa.endpoint],
      allowedAkv: [...base.allowedAkv, vault.endpoint, hsm.endpoint],
      // Chain refreshes go to the IMDS emulator's THIM, as they would to the host's on ACI.
      args: { certcache: { endpoint_type: 'LocalTHIM' as const, endpoint: `${imds.url}/metadata/THIM/amd/certification` } },
    };
    const sidecar = await startSidecar({
      config,
      logger,
      // A CVM has no security context; the simulated container group gets one written.
      ...(onCvm ? {} : { platform, securityContextDir: path.join(dir, 'security-context') }),
      // `skr local` takes no other settings from the environment, but the fast-path ones (the bench sets them).
      release: opts.release ?? releaseTuningFromProcess(),
      ...(opts.grpcPort !== undefined ? { grpcPort: opts.grpcPort } : {}),
    });
    started.push(sidecar);

    const state: LocalState = {
      platform: onCvm ? 'azure-cvm' : 'aci',
      ...(onCvm ? { tee: tdx ? ('tdx' as const) : ('sevsnp' as const) } : {}),
      sidecarUrl: sidecar.url,
      maaEndpoint: maa.endpoint,
      vaultEndpoint: vault.endpoint,
      hsmEndpoint: hsm.endpoint,
      imdsUrl: imds.url,
      caCertPath: ca.certPath,
      securityContextDir: sidecar.securityContextDir ?? '',
      hostData: platform.hostData.toString('hex'),
      pid: process.pid,
      ...(sidecar.grpc ? { grpcTarget: sidecar.grpc.target } : {}),
      ...(tpm ? { tpm } : {}),
    };
    const reboot = () => (tpm ? rebootSimulatedCvm(tpm) : Promise.reject(new Error('reboot: the aci stack has no vTPM')));
    const close = async () => {
      for (const s of started.reverse()) await s.close().catch(() => undefined);
    };
    return { state, platform, sidecar, maa, imds, vault, hsm, ...(cvm ? { cvm } : {}), reboot, close };
  } catch (e) {
    for (const s of started.reverse()) await s.close().catch(() => undefined);
    throw e;
  }
}
