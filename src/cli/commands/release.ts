/**
 * `skr release`: one key release in-process, for VM boot scripts. The same KeyReleasePipeline the sidecar
 * runs, on the platform found here (../release-setup.ts: a CVM's vTPM, or a container's SEV-SNP device).
 * The key goes to a NEW file (O_EXCL|O_NOFOLLOW, mode 0600; an existing path is refused); stdout gets
 * only the key id and a thumbprint (sha256 of the material, as `skr import-key` prints it).
 */
import { createPrivateKey, type JsonWebKey } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ReleaseJwsVerifier } from '../../akv/jws';
import { KeyReleasePipeline, parseKid, ReleaseRefusedError, type ReleasedKey } from '../../akv/release';
import { wipe } from '../../common/bytes';
import { parseEndpoint } from '../../common/endpoint';
import { createHttpsFetch } from '../../common/https-fetch';
import { loadServerConfig, parseReleaseEnc } from '../../server/config';
import { CliError, type Out } from '../io';
import { detectPlatform, readCaFiles, RELEASE_OPTIONS, vaultParts, type Platform } from '../release-setup';
import { thumbprint } from './import-key';

export const usage =
  'skr release --maa HOST --akv HOST --kid NAME[/VERSION] [--out FILE] [--format jwk|pem|raw] [--tpm /dev/tpmrm0|tcp:127.0.0.1:PORT] [--tpm-timeout SECONDS] [--simulate]\n' +
  '      [--enc CKM_RSA_AES_KEY_WRAP|RSA_AES_KEY_WRAP_256|RSA_AES_KEY_WRAP_384] [--imds URL] [--client-id ID] [--ca FILE] [--managed-hsm]\n' +
  '      release one key on this VM/container (CVM: vTPM; ACI: SEV-SNP) and write it to a new file (mode 0600, default ./NAME.<format>);\n' +
  '      prints only the key id and its thumbprint.';

const FORMATS = ['jwk', 'pem', 'raw'] as const;
type Format = (typeof FORMATS)[number];
const EXT: Record<Format, string> = { jwk: 'jwk.json', pem: 'pem', raw: 'key' };
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
      ...RELEASE_OPTIONS,
      out: { type: 'string' },
      format: { type: 'string' },
      enc: { type: 'string' },
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
  const extraCaPem = readCaFiles(values.ca ?? []);
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
      vault: vaultParts({ akv, extraCaPem, ...(values['client-id'] ? { clientId: values['client-id'] } : {}), ...(values.imds ? { imds: values.imds } : {}), ...(values['managed-hsm'] ? { managedHsm: true } : {}) }, fetch).vault,
      jws: new ReleaseJwsVerifier({ extraCaPem }),
      enc,
      maaTokenReuse: { enabled: false },
    });
    try {
      released = await pipeline.release({ maaEndpoint: maa, akvEndpoint: akv, kid: values.kid, checkKeyType: checkFormatFor(format) });
    } catch (e) {
      // A refusal's hints (the 403 explanation) go to stderr with the error line main prints.
      if (e instanceof ReleaseRefusedError) for (const h of e.explanation?.hints ?? []) io.err(`skr release: hint: ${h}`);
      throw e;
    }
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
