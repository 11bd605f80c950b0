/**
 * The parts of an in-process key release, found on this machine: `skr release` runs them, `skr doctor`
 * checks them one by one. One place builds them, so what the doctor checks is what a release uses.
 *   - Azure confidential VM: the vTPM (`--tpm /dev/tpmrm0`, found by default when there is no SEV-SNP
 *     device; `--tpm tcp:127.0.0.1:PORT` for swtpm), guest attestation and the TPM-resident KEK;
 *   - Azure container (ACI): the SEV-SNP device (or `--simulate`), SEV-SNP attestation, a software KEK.
 * Platform modules load only when their platform is chosen; the simulator only with `--simulate` or a
 * TCP TPM (which is a simulator by definition).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TokenProvider } from '../akv/identity';
import type { KeyEncryptionKeySource } from '../akv/kek';
import { SoftwareKekSource } from '../akv/software-kek';
import { KeyVaultRelease } from '../akv/vault-release';
import type { SecurityContextEnv } from '../certs/thim';
import type { AmdCertChain } from '../certs/types';
import type { Endpoint } from '../common/endpoint';
import { DeviceError } from '../common/errors';
import type { createHttpsFetch } from '../common/https-fetch';
import type { Attester } from '../maa/attester';
import { CliError } from './io';

type Fetch = ReturnType<typeof createHttpsFetch>;

export const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);
export const DEFAULT_TPM = '/dev/tpmrm0';

/** The parseArgs options `skr release` and `skr doctor` share: the release to make (or check) and the parts that make it. */
export const RELEASE_OPTIONS = {
  maa: { type: 'string' },
  akv: { type: 'string' },
  kid: { type: 'string' },
  tpm: { type: 'string' },
  simulate: { type: 'boolean' },
  imds: { type: 'string' },
  'client-id': { type: 'string' },
  ca: { type: 'string', multiple: true },
  'managed-hsm': { type: 'boolean' },
} as const;

export interface Platform {
  name: string;
  attester: Attester;
  keks: KeyEncryptionKeySource;
  /** Test-only hardware (the simulator, or swtpm): its AMD / Intel chain is the simulator's, not the vendor's. */
  simulated: boolean;
  /** The CPU vendor's TEE: an SEV-SNP report (ACI, SEV-SNP CVMs) or a TDREPORT (TDX CVMs). */
  tee: 'sevsnp' | 'tdx';
  /** The platform's hardware report as it answers now: the SEV-SNP report, or on TDX the TDREPORT (on a CVM, the one in the vTPM's HCL report). */
  evidence(signal?: AbortSignal): Promise<{ report: Buffer; what: string }>;
  /** SEV-SNP: the VCEK chain for `report` from this platform's collateral source (THIM / the security context). */
  collateral(report: Buffer, signal?: AbortSignal): Promise<{ chain: AmdCertChain; from: string }>;
  /** TDX: the TD quote of a TDREPORT from IMDS (`/acc/tdquote`). */
  tdQuote?(tdReport: Buffer, signal?: AbortSignal): Promise<{ quote: Buffer; from: string }>;
  close(): Promise<void>;
}

/** `/dev/...` → the kernel resource manager; `tcp:HOST:PORT` → swtpm (loopback only: a TCP TPM is a simulator). */
export async function tpmTransport(spec: string, timeoutMs?: number) {
  const { DeviceTransport, SwtpmTcpTransport } = await import('../tpm');
  const m = /^tcp:(.+):(\d{1,5})$/.exec(spec);
  if (m) {
    const host = m[1].replace(/^\[|\]$/g, '');
    if (!LOOPBACK.has(host) && !LOOPBACK.has(`[${host}]`)) throw new CliError(`--tpm ${spec}: a TCP TPM is a simulator (swtpm) and must be on loopback`);
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw new CliError(`--tpm ${spec}: port out of range`);
    return new SwtpmTcpTransport({ host, port, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
  }
  if (!spec.startsWith('/')) throw new CliError(`--tpm ${spec}: give a device path (${DEFAULT_TPM}) or tcp:127.0.0.1:PORT`);
  return new DeviceTransport(spec, timeoutMs !== undefined ? { timeoutMs } : {});
}

async function cvmPlatform(spec: string, imds: string | undefined, fetch: Fetch, tpmTimeoutMs: number | undefined): Promise<Platform> {
  const { TpmClient } = await import('../tpm');
  const { cvmReleaseParts } = await import('../cvm/cvm-release-parts');
  const { VtpmEvidence } = await import('../cvm/vtpm-evidence');
  const { LocalThimSource } = await import('../certs/sources/local-thim');
  const tpm = new TpmClient(await tpmTransport(spec, tpmTimeoutMs));
  const thim = new LocalThimSource(imds ? { baseUrl: imds } : {});
  // The HCL report's type says which TEE: a TDX CVM's isolation evidence is the TD quote from IMDS, not a VCEK chain.
  const { hclTeeOf } = await import('../cvm/hcl');
  const tdx = hclTeeOf(await new VtpmEvidence(tpm).readHclBytes()) === 'tdx';
  const { fetchTdQuote } = await import('../tdx/imds-quote');
  const tdQuote = (r: Buffer, s?: AbortSignal) => fetchTdQuote(r, imds ? { baseUrl: imds } : {}, s);
  const parts = cvmReleaseParts({
    tpm,
    fetch,
    collateral: (s) => thim.fetch(undefined, s),
    ...(tdx ? { tdQuote } : {}),
  });
  const { isTdxHcl } = await import('../cvm/hcl');
  const where = `HCL report in vTPM NV 0x01400001 (${tpm.transport.description})`;
  return {
    name: `Azure ${tdx ? 'TDX ' : ''}confidential VM (vTPM ${tpm.transport.description})`,
    attester: parts.attester,
    keks: parts.keks,
    simulated: spec.startsWith('tcp:'),
    tee: tdx ? 'tdx' : 'sevsnp',
    evidence: async () => {
      const { hcl } = await new VtpmEvidence(tpm).readHclReport();
      return isTdxHcl(hcl) ? { report: hcl.tdReportBytes, what: `TDREPORT in the ${where}` } : { report: hcl.snpReportBytes, what: where };
    },
    collateral: async (_report, signal) => ({ chain: await thim.fetch(undefined, signal), from: `THIM at ${imds ?? 'IMDS 169.254.169.254'}` }),
    tdQuote: async (r, signal) => ({ quote: await tdQuote(r, signal), from: `IMDS ${imds ?? '169.254.169.254'}/acc/tdquote` }),
    close: async () => {
      await parts.close().catch(() => undefined);
      await tpm.close().catch(() => undefined);
    },
  };
}

async function aciPlatform(simulate: boolean, fetch: Fetch, env: SecurityContextEnv): Promise<Platform> {
  const { detectEvidenceSource } = await import('../snp/detect');
  const { readSecurityContext } = await import('../certs/thim');
  const { SecurityContextSource } = await import('../certs/sources/security-context');
  const { collateralSourceFromArgs } = await import('../certs/sources/from-args');
  const { CollateralProvider } = await import('../certs/provider');
  const { SevSnpAttester } = await import('../maa/attester');
  const { MaaClient } = await import('../maa/client');
  const { parseReport } = await import('../snp/report');
  let evidence;
  let tmp: string | undefined;
  if (simulate) {
    // As `skr serve --simulate`: test-only keys, loaded only when asked for.
    const { SimulatedPlatform, simulatedUvmEndorsementBase64 } = await import('../snp/simulator');
    const { writeSecurityContext } = await import('../server/simulation');
    const platform = new SimulatedPlatform();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-release-context-'));
    writeSecurityContext(tmp, platform, simulatedUvmEndorsementBase64(platform.measurement));
    evidence = platform.evidenceSource();
  } else {
    evidence = await detectEvidenceSource();
  }
  const context = readSecurityContext({ ...(tmp ? { dir: tmp } : {}), env });
  const fromArgs = collateralSourceFromArgs(undefined);
  const primary = context.hostAmdCert ? new SecurityContextSource({ dir: context.dir, env }) : fromArgs;
  const collateral = new CollateralProvider({ evidence, primary, refresh: fromArgs });
  const attester = new SevSnpAttester({ collateral, maa: new MaaClient({ fetch }), referenceInfoBase64: context.referenceInfoBase64 });
  const source = evidence;
  return {
    name: simulate ? 'Azure container (SIMULATED SEV-SNP, test-only keys)' : `Azure container (SEV-SNP ${evidence.description})`,
    attester,
    keks: new SoftwareKekSource(),
    simulated: simulate,
    tee: 'sevsnp',
    evidence: async () => ({ report: (await source.getReport({ reportData: randomBytes(64) })).report, what: `SEV-SNP report from ${source.description}` }),
    collateral: async (report, signal) => ({
      chain: await collateral.chainForReport(parseReport(report), signal),
      from: context.hostAmdCert ? `the security context (${context.hostAmdCertFrom === 'env' ? 'UVM_HOST_AMD_CERTIFICATE' : 'host-amd-cert-base64'})` : 'THIM / AMD KDS',
    }),
    close: async () => {
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}

export interface PlatformChoice {
  /** A vTPM: `/dev/tpmrm0` or `tcp:127.0.0.1:PORT` (swtpm). */
  tpm?: string;
  simulate?: boolean;
  imds?: string;
  /** Deadline of each TPM command (the transport's default when absent). */
  tpmTimeoutMs?: number;
}

/** --tpm → CVM; --simulate → simulated ACI; else the SEV-SNP device, else /dev/tpmrm0. */
export async function detectPlatform(v: PlatformChoice, fetch: Fetch, env: SecurityContextEnv): Promise<Platform> {
  if (v.tpm && v.simulate) throw new CliError('give --tpm (confidential VM) or --simulate (simulated container), not both');
  if (v.tpm) return cvmPlatform(v.tpm, v.imds, fetch, v.tpmTimeoutMs);
  if (v.simulate) return aciPlatform(true, fetch, env);
  try {
    return await aciPlatform(false, fetch, env);
  } catch (e) {
    if (!(e instanceof DeviceError && e.code === 'ERR_NO_DEVICE')) throw e;
    if (!fs.existsSync(DEFAULT_TPM)) throw new DeviceError('ERR_NO_DEVICE', `${e.message}; and no vTPM at ${DEFAULT_TPM} (not a confidential VM either)`);
    return cvmPlatform(DEFAULT_TPM, v.imds, fetch, v.tpmTimeoutMs);
  }
}

export interface VaultChoice {
  akv: Endpoint;
  clientId?: string;
  imds?: string;
  /** The vault is a Managed HSM although its name does not say so (an emulator). */
  managedHsm?: boolean;
  extraCaPem: string[];
}

/** The identity and the vault call of a release, as `skr release` configures them. */
export function vaultParts(v: VaultChoice, fetch: Fetch): { tokens: TokenProvider; vault: KeyVaultRelease } {
  const tokens = new TokenProvider({ ...(v.clientId ? { clientId: v.clientId } : {}), ...(v.imds ? { imdsEndpoint: v.imds } : {}), extraCaPem: v.extraCaPem });
  const vault = new KeyVaultRelease({
    tokens,
    fetch,
    // A loopback vault is an emulator: its challenge names Azure's resource on another domain.
    relaxedChallengeEndpoints: LOOPBACK.has(v.akv.hostname) ? [v.akv.host] : [],
    // Azure's Managed HSM names say so; --managed-hsm is for one whose name does not (an emulator).
    managedHsmEndpoints: v.managedHsm ? [v.akv.host] : [],
  });
  return { tokens, vault };
}

/** The PEM text of each `--ca FILE`. */
export function readCaFiles(files: string[]): string[] {
  return files.map((f) => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read --ca ${f}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  });
}
