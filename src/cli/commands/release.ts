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
  'skr release --maa HOST --akv HOST --kid NAME[/VERSION] [--out FILE] [--format jwk|pem|raw] [--tpm /dev/tpmrm0|tcp:127.0.0.1:PORT] [--tpm-timeout SECONDS] [--simulate]\n' +
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
async function tpmTransport(spec: string, timeoutMs: number) {
  const { DeviceTransport, SwtpmTcpTransport } = await import('../../tpm');
  const m = /^tcp:(.+):(\d{1,5})$/.exec(spec);
  if (m) {
    const host = m[1].replace(/^\[|\]$/g, '');
    if (!LOOPBACK.has(host) && !LOOPBACK.has(`[${host}]`)) throw new CliError(`--tpm ${spec}: a TCP TPM is a simulator (swtpm) and must be on loopback`);
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw new CliError(`--tpm ${spec}: port out of range`);
    return new SwtpmTcpTransport({ host, port, timeoutMs });
  }
  if (!spec.startsWith('/')) throw new CliError(`--tpm ${spec}: give a device path (${DEFAULT_TPM}) or tcp:127.0.0.1:PORT`);
  return new DeviceTransport(spec, { timeoutMs });
}

async function cvmPlatform(spec: string, imds: string | undefined, fetch: ReturnType<typeof createHttpsFetch>, tpmTimeoutMs: number): Promise<Platform> {
  const { TpmClient } = await import('../../tpm');
  const { cvmReleaseParts } = await import('../../cvm/cvm-release-parts');
  const { LocalThimSource } = await import('../../certs/sources/local-thim');
  const tpm = new TpmClient(await tpmTransport(spec, tpmTimeoutMs));
  const thim = new LocalThimSource(imds ? { baseUrl: imds } : {});
  const parts = cvmReleaseParts({ tpm, fetch, collateral: (s) => thim.fetch(undefined, s) });
  return {
    name: `Azure confidential VM (vTPM ${tpm.transport.description})`,
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
async function detectPlatform(v: { tpm?: string; simulate?: boolean; imds?: string; tpmTimeoutMs: number }, fetch: ReturnType<typeof createHttpsFetch>, env: SecurityContextEnv): Promise<Platform> {
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

/**
 * Create `file` (never an existing path, never through a symlink), mode 0600, and return its descriptor.
 * Done before anything is released, so a path that cannot be written (exists, a symlink, a missing or
 * unwritable directory) is refused first.
 */
export function createNewSecretFile(file: string): number {
  try {
    const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
    const fd = fs.openSync(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
    fs.fchmodSync(fd, 0o600);
    return fd;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new CliError(`${file} exists: refusing to overwrite it (remove it or give another --out)`, 1);
    if (code === 'ELOOP') throw new CliError(`${file} is a symbolic link: refusing to write through it`, 1);
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new CliError(`cannot create ${file}: its directory ${path.dirname(file)} does not exist`, 1);
    throw new CliError(`cannot create ${file}: ${code ?? (e as Error).message}`, 1);
  }
}

/** Write `data` to a descriptor from createNewSecretFile (the caller closes it). */
export function writeSecretFile(fd: number, data: Buffer): void {
  fs.writeSync(fd, data);
  fs.fsyncSync(fd);
}

/** Create `file` (never an existing path, never through a symlink), mode 0600, and write `data`. */
export function writeNewSecretFile(file: string, data: Buffer): void {
  const fd = createNewSecretFile(file);
  try {
    writeSecretFile(fd, data);
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
      'tpm-timeout': { type: 'string' },
    },
  });
  if (positionals.length || !values.maa || !values.akv || !values.kid) throw new CliError(`usage: ${usage}`);
  const format = (values.format ?? 'jwk') as Format;
  if (!FORMATS.includes(format)) throw new CliError(`--format ${values.format} is not one of ${FORMATS.join(', ')}`);
  const { name } = parseKid(values.kid);
  const maa = parseEndpoint('maa', values.maa);
  const akv = parseEndpoint('akv', values.akv);
  // The sidecar's own settings from the environment (SKR_RELEASE_ENC, the security-context variables).
  const settings = loadServerConfig({ port: '0', ...(values['tpm-timeout'] !== undefined ? { tpmTimeout: values['tpm-timeout'] } : {}) });
  const enc = values.enc !== undefined ? parseReleaseEnc(values.enc, '--enc') : settings.releaseEnc;
  const out = path.resolve(values.out ?? `${name}.${EXT[format]}`);
  const extraCaPem = (values.ca ?? []).map((f) => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read --ca ${f}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  });
  // Everything is checked before attesting: the output file is created now (empty, 0600) and removed
  // again should the release fail; the key type is checked against --format before the key is unwrapped.
  const fd = createNewSecretFile(out);
  let written = false;
  try {
    written = await releaseInto(fd, out, { ...values, enc, format, maa, akv, kid: values.kid, extraCaPem, settings }, io);
  } finally {
    fs.closeSync(fd);
    if (!written) fs.rmSync(out, { force: true });
  }
  return 0;
}

/** The released key's type must have the asked format (an oct key has no PEM form). */
export function checkFormatFor(format: Format): (kty: string) => void {
  return (kty) => {
    if ((kty === 'oct' || kty === 'oct-HSM') && format === 'pem') throw new CliError('--format pem is for RSA and EC keys; write an oct key as raw or jwk (nothing was written)');
  };
}

interface ReleaseValues {
  tpm?: string;
  simulate?: boolean;
  imds?: string;
  'client-id'?: string;
  'managed-hsm'?: boolean;
  kid: string;
  enc: ReturnType<typeof parseReleaseEnc>;
  format: Format;
  maa: ReturnType<typeof parseEndpoint>;
  akv: ReturnType<typeof parseEndpoint>;
  extraCaPem: string[];
  settings: ReturnType<typeof loadServerConfig>;
}

/** Release and write into the reserved file; true once written. */
async function releaseInto(fd: number, out: string, v: ReleaseValues, io: Out): Promise<boolean> {
  const { enc, format, maa, akv, extraCaPem, settings } = v;
  const values = v;

  const fetch = createHttpsFetch({ extraCaPem });
  let platform: Platform | undefined;
  let released: ReleasedKey;
  try {
    platform = await detectPlatform(
      { ...(values.tpm ? { tpm: values.tpm } : {}), ...(values.simulate ? { simulate: true } : {}), ...(values.imds ? { imds: values.imds } : {}), tpmTimeoutMs: settings.limits.tpmCommandTimeoutMs },
      fetch,
      settings.securityContextEnv,
    );
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
    released = await pipeline.release({ maaEndpoint: maa, akvEndpoint: akv, kid: values.kid, checkKeyType: checkFormatFor(format) });
  } finally {
    await platform?.close();
    fetch.destroy();
  }
  const { data, material } = encodeReleasedKey(released.jwk, format);
  try {
    writeSecretFile(fd, data);
    io.out(released.keyId);
    io.out(`thumbprint ${thumbprint(material)}`);
    io.err(`skr release: ${released.jwk.kty} key written to ${out} (${format}, mode 0600)`);
  } finally {
    wipe(data, material);
  }
  return true;
}
