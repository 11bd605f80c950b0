/**
 * `skr release`: one key release in-process, for VM boot scripts. The same KeyReleasePipeline the sidecar
 * runs, on the platform found here:
 *   - Azure confidential VM: the vTPM (`--tpm /dev/tpmrm0`, found by default when there is no SEV-SNP
 *     device; `--tpm tcp:127.0.0.1:PORT` for swtpm), guest attestation and the TPM-resident KEK;
 *   - Azure container (ACI): the SEV-SNP device (or `--simulate`), SEV-SNP attestation, a software KEK.
 * The key goes to a NEW file (O_EXCL|O_NOFOLLOW, mode 0600; an existing path is refused); stdout gets
 * only the key id and a thumbprint (sha256 of the material, as `skr import-key` prints it).
 */
import { createPrivateKey, type JsonWebKey } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { TokenProvider } from '../../akv/identity';
import { ReleaseJwsVerifier } from '../../akv/jws';
import type { KeyEncryptionKeySource } from '../../akv/kek';
import { KeyReleasePipeline, parseKid, type ReleasedKey } from '../../akv/release';
import { SoftwareKekSource } from '../../akv/software-kek';
import { KeyVaultRelease } from '../../akv/vault-release';
import { wipe } from '../../common/bytes';
import { parseEndpoint } from '../../common/endpoint';
import { DeviceError } from '../../common/errors';
import { createHttpsFetch } from '../../common/https-fetch';
import type { Attester } from '../../maa/attester';
import { loadServerConfig, parseReleaseEnc } from '../../server/config';
import type { SecurityContextEnv } from '../../certs/thim';
import { CliError, type Out } from '../io';
import { thumbprint } from './import-key';

export const usage =
  'skr release --maa HOST --akv HOST --kid NAME[/VERSION] [--out FILE] [--format jwk|pem|raw] [--tpm /dev/tpmrm0|tcp:127.0.0.1:PORT] [--simulate]\n' +
  '      [--enc CKM_RSA_AES_KEY_WRAP|RSA_AES_KEY_WRAP_256|RSA_AES_KEY_WRAP_384] [--imds URL] [--client-id ID] [--ca FILE] [--managed-hsm]\n' +
  '      release one key on this VM/container (CVM: vTPM; ACI: SEV-SNP) and write it to a new file (mode 0600, default ./NAME.<format>);\n' +
  '      prints only the key id and its thumbprint.';

const FORMATS = ['jwk', 'pem', 'raw'] as const;
type Format = (typeof FORMATS)[number];
const EXT: Record<Format, string> = { jwk: 'jwk.json', pem: 'pem', raw: 'key' };
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);
const DEFAULT_TPM = '/dev/tpmrm0';

interface Platform {
  name: string;
  attester: Attester;
  keks: KeyEncryptionKeySource;
  close(): Promise<void>;
}

/** `/dev/...` → the kernel resource manager; `tcp:HOST:PORT` → swtpm (loopback only: a TCP TPM is a simulator). */
export async function tpmTransport(spec: string) {
  const { DeviceTransport, SwtpmTcpTransport } = await import('../../tpm');
  const m = /^tcp:(.+):(\d{1,5})$/.exec(spec);
  if (m) {
    const host = m[1].replace(/^\[|\]$/g, '');
    if (!LOOPBACK.has(host) && !LOOPBACK.has(`[${host}]`)) throw new CliError(`--tpm ${spec}: a TCP TPM is a simulator (swtpm) and must be on loopback`);
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw new CliError(`--tpm ${spec}: port out of range`);
    return new SwtpmTcpTransport({ host, port });
  }
  if (!spec.startsWith('/')) throw new CliError(`--tpm ${spec}: give a device path (${DEFAULT_TPM}) or tcp:127.0.0.1:PORT`);
  return new DeviceTransport(spec);
}

async function cvmPlatform(spec: string, imds: string | undefined, fetch: ReturnType<typeof createHttpsFetch>): Promise<Platform> {
  const { TpmClient } = await import('../../tpm');
  const { cvmReleaseParts } = await import('../../cvm/cvm-release-parts');
  const { LocalThimSource } = await import('../../certs/sources/local-thim');
  const tpm = new TpmClient(await tpmTransport(spec));
  const thim = new LocalThimSource(imds ? { baseUrl: imds } : {});
  // The HCL report's type says which TEE: a TDX CVM's isolation evidence is the TD quote from IMDS, not a VCEK chain.
  const { VtpmEvidence } = await import('../../cvm/vtpm-evidence');
  const { hclTeeOf } = await import('../../cvm/hcl');
  const tdx = hclTeeOf(await new VtpmEvidence(tpm).readHclBytes()) === 'tdx';
  const { fetchTdQuote } = await import('../../tdx/imds-quote');
  const parts = cvmReleaseParts({
    tpm,
    fetch,
    collateral: (s) => thim.fetch(undefined, s),
    ...(tdx ? { tdQuote: (r: Buffer, s?: AbortSignal) => fetchTdQuote(r, imds ? { baseUrl: imds } : {}, s) } : {}),
  });
  return {
    name: `Azure ${tdx ? 'TDX ' : ''}confidential VM (vTPM ${tpm.transport.description})`,
    attester: parts.attester,
    keks: parts.keks,
    close: async () => {
      await parts.close().catch(() => undefined);
      await tpm.close().catch(() => undefined);
    },
  };
}

async function aciPlatform(simulate: boolean, fetch: ReturnType<typeof createHttpsFetch>, env: SecurityContextEnv): Promise<Platform> {
  const { detectEvidenceSource } = await import('../../snp/detect');
  const { readSecurityContext } = await import('../../certs/thim');
  const { SecurityContextSource } = await import('../../certs/sources/security-context');
  const { collateralSourceFromArgs } = await import('../../certs/sources/from-args');
  const { CollateralProvider } = await import('../../certs/provider');
  const { SevSnpAttester } = await import('../../maa/attester');
  const { MaaClient } = await import('../../maa/client');
  let evidence;
  let tmp: string | undefined;
  if (simulate) {
    // As `skr serve --simulate`: test-only keys, loaded only when asked for.
    const { SimulatedPlatform, simulatedUvmEndorsementBase64 } = await import('../../snp/simulator');
    const { writeSecurityContext } = await import('../../server/simulation');
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
  return {
    name: simulate ? 'Azure container (SIMULATED SEV-SNP, test-only keys)' : `Azure container (SEV-SNP ${evidence.description})`,
    attester,
    keks: new SoftwareKekSource(),
    close: async () => {
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}

/** --tpm → CVM; --simulate → simulated ACI; else the SEV-SNP device, else /dev/tpmrm0. */
async function detectPlatform(v: { tpm?: string; simulate?: boolean; imds?: string }, fetch: ReturnType<typeof createHttpsFetch>, env: SecurityContextEnv): Promise<Platform> {
  if (v.tpm && v.simulate) throw new CliError('give --tpm (confidential VM) or --simulate (simulated container), not both');
  if (v.tpm) return cvmPlatform(v.tpm, v.imds, fetch);
  if (v.simulate) return aciPlatform(true, fetch, env);
  try {
    return await aciPlatform(false, fetch, env);
  } catch (e) {
    if (!(e instanceof DeviceError && e.code === 'ERR_NO_DEVICE')) throw e;
    if (!fs.existsSync(DEFAULT_TPM)) throw new DeviceError('ERR_NO_DEVICE', `${e.message}; and no vTPM at ${DEFAULT_TPM} (not a confidential VM either)`);
    return cvmPlatform(DEFAULT_TPM, v.imds, fetch);
  }
}

/** The released key in the asked format. oct keys have no PEM form. */
export function encodeReleasedKey(jwk: JsonWebKey, format: Format): { data: Buffer; material: Buffer } {
  if (jwk.kty === 'oct') {
    if (format === 'pem') throw new CliError('--format pem is for RSA and EC keys; write an oct key as raw or jwk');
    const k = Buffer.from(String(jwk.k ?? ''), 'base64url');
    return { data: format === 'raw' ? Buffer.from(k) : Buffer.from(JSON.stringify(jwk) + '\n'), material: k };
  }
  const key = createPrivateKey({ key: jwk, format: 'jwk' });
  const der = key.export({ type: 'pkcs8', format: 'der' });
  const data = format === 'raw' ? Buffer.from(der) : format === 'pem' ? Buffer.from(key.export({ type: 'pkcs8', format: 'pem' }) as string) : Buffer.from(JSON.stringify(jwk) + '\n');
  return { data, material: der };
}

/** Create `file` (never an existing path, never through a symlink), mode 0600, and write `data`. */
export function writeNewSecretFile(file: string, data: Buffer): void {
  let fd: number;
  try {
    const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
    fd = fs.openSync(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new CliError(`${file} exists: refusing to overwrite it (remove it or give another --out)`, 1);
    if (code === 'ELOOP') throw new CliError(`${file} is a symbolic link: refusing to write through it`, 1);
    throw new CliError(`cannot create ${file}: ${code ?? (e as Error).message}`, 1);
  }
  try {
    fs.fchmodSync(fd, 0o600);
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export async function releaseCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      maa: { type: 'string' },
      akv: { type: 'string' },
      kid: { type: 'string' },
      out: { type: 'string' },
      format: { type: 'string' },
      enc: { type: 'string' },
      tpm: { type: 'string' },
      simulate: { type: 'boolean' },
      imds: { type: 'string' },
      'client-id': { type: 'string' },
      ca: { type: 'string', multiple: true },
      'managed-hsm': { type: 'boolean' },
    },
  });
  if (positionals.length || !values.maa || !values.akv || !values.kid) throw new CliError(`usage: ${usage}`);
  const format = (values.format ?? 'jwk') as Format;
  if (!FORMATS.includes(format)) throw new CliError(`--format ${values.format} is not one of ${FORMATS.join(', ')}`);
  const { name } = parseKid(values.kid);
  const maa = parseEndpoint('maa', values.maa);
  const akv = parseEndpoint('akv', values.akv);
  // The sidecar's own settings from the environment (SKR_RELEASE_ENC, the security-context variables).
  const settings = loadServerConfig({ port: '0' });
  const enc = values.enc !== undefined ? parseReleaseEnc(values.enc, '--enc') : settings.releaseEnc;
  const out = path.resolve(values.out ?? `${name}.${EXT[format]}`);
  // Fail before attesting when the file cannot be written.
  if (fs.existsSync(out) || isSymlink(out)) throw new CliError(`${out} exists: refusing to overwrite it (remove it or give another --out)`, 1);
  const extraCaPem = (values.ca ?? []).map((f) => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read --ca ${f}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  });

  const fetch = createHttpsFetch({ extraCaPem });
  let platform: Platform | undefined;
  let released: ReleasedKey;
  try {
    platform = await detectPlatform({ ...(values.tpm ? { tpm: values.tpm } : {}), ...(values.simulate ? { simulate: true } : {}), ...(values.imds ? { imds: values.imds } : {}) }, fetch, settings.securityContextEnv);
    io.err(`skr release: platform ${platform.name}`);
    const pipeline = new KeyReleasePipeline({
      attester: platform.attester,
      keks: platform.keks,
      vault: new KeyVaultRelease({
        tokens: new TokenProvider({ ...(values['client-id'] ? { clientId: values['client-id'] } : {}), ...(values.imds ? { imdsEndpoint: values.imds } : {}), extraCaPem }),
        fetch,
        // A loopback vault is an emulator: its challenge names Azure's resource on another domain.
        relaxedChallengeEndpoints: LOOPBACK.has(akv.hostname) ? [akv.host] : [],
        // Azure's Managed HSM names say so; --managed-hsm is for one whose name does not (an emulator).
        managedHsmEndpoints: values['managed-hsm'] ? [akv.host] : [],
      }),
      jws: new ReleaseJwsVerifier({ extraCaPem }),
      enc,
      maaTokenReuse: { enabled: false },
    });
    released = await pipeline.release({ maaEndpoint: maa, akvEndpoint: akv, kid: values.kid });
  } finally {
    await platform?.close();
    fetch.destroy();
  }
  const { data, material } = encodeReleasedKey(released.jwk, format);
  try {
    writeNewSecretFile(out, data);
    io.out(released.keyId);
    io.out(`thumbprint ${thumbprint(material)}`);
    io.err(`skr release: ${released.jwk.kty} key written to ${out} (${format}, mode 0600)`);
  } finally {
    wipe(data, material);
  }
  return 0;
}

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
