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
import { detectPlatform, readCaFiles, vaultParts, type Platform } from '../release-setup';
import { thumbprint } from './import-key';

export const usage =
  'skr release --maa HOST --akv HOST --kid NAME[/VERSION] [--out FILE] [--format jwk|pem|raw] [--tpm /dev/tpmrm0|tcp:127.0.0.1:PORT] [--simulate]\n' +
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
  const extraCaPem = readCaFiles(values.ca ?? []);

  const fetch = createHttpsFetch({ extraCaPem });
  let platform: Platform | undefined;
  let released: ReleasedKey;
  try {
    platform = await detectPlatform({ ...(values.tpm ? { tpm: values.tpm } : {}), ...(values.simulate ? { simulate: true } : {}), ...(values.imds ? { imds: values.imds } : {}) }, fetch, settings.securityContextEnv);
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
      released = await pipeline.release({ maaEndpoint: maa, akvEndpoint: akv, kid: values.kid });
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
