import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { createHttpsFetch } from '../../common/https-fetch';
import { providerCredential, staticTokenCredential } from '../../akv/credentials';
import { TokenProvider } from '../../akv/identity';
import {
  deriveSymmetricKey,
  importReleasableKey,
  parseImportKeyConfig,
  policyFromConfig,
  sdkJwkFor,
  type ImportKty,
} from '../../akv/import-key';
import { SkrError } from '../../common/errors';
import { reserveSecretFile, type ReservedSecretFile } from '../secret-file';
import { vaultBaseUrl } from '../../akv/release';
import { workloadIdentityFromEnv } from '../../server/config';
import { wipe } from '../../common/bytes';
import { CliError, readInput, type Out } from '../io';

/** AKS workload identity when the environment configures it (read by the config module). */
function workloadIdentityOption(): { workload?: ReturnType<typeof workloadIdentityFromEnv> } {
  const w = workloadIdentityFromEnv();
  return w ? { workload: w } : {};
}

export const usage =
  'skr import-key -c importkeyconfig.json [--key-hex HEX|FILE] [--key-pem FILE] [--ca FILE] [--imds URL] [--key-out FILE] [--derived-key-out FILE] [--force]\n' +
  '      import an exportable key bound to a release policy built from the config (oct-HSM: Managed HSM only; RSA-HSM or EC-HSM);\n' +
  '      checks the config, the key and the output files before touching the vault; generates the key when none is given\n' +
  '      (--key-out saves it: a new file, mode 0600; --force replaces an existing one). Token: key.akv.bearer_token, else the\n' +
  '      managed identity (--imds for an emulator).';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** Short, non-reversible identifier of key material for humans: never the key itself. */
export function thumbprint(material: Buffer): string {
  return createHash('sha256').update(material).digest('hex').slice(0, 16);
}

function readCaFiles(files: string[]): string[] {
  return files.map((f) => {
    try {
      return readFileSync(f, 'utf8');
    } catch (e) {
      throw new CliError(`--ca ${f}: cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  });
}

/** The key to import: from --key-hex / --key-pem, else generated here. */
function loadMaterial(kty: ImportKty, hexArg: string | undefined, pemFile: string | undefined): { material: Buffer | KeyObject; generated: boolean } {
  if (kty === 'oct-HSM') {
    if (pemFile) throw new CliError('--key-pem is for RSA-HSM / EC-HSM keys; oct-HSM takes --key-hex');
    if (hexArg === undefined) return { material: randomBytes(32), generated: true };
    let hex = hexArg;
    if (existsSync(hexArg)) {
      try {
        hex = readFileSync(hexArg, 'utf8');
      } catch (e) {
        throw new CliError(`--key-hex ${hexArg}: cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    }
    hex = hex.trim();
    if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new CliError('--key-hex is not hex (give the hex string or a file holding it)');
    return { material: Buffer.from(hex, 'hex'), generated: false };
  }
  if (hexArg) throw new CliError(`--key-hex is for oct-HSM keys; ${kty} takes --key-pem`);
  if (!pemFile) {
    const material = kty === 'RSA-HSM'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
      : generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
    return { material, generated: true };
  }
  let pem: string;
  try {
    pem = readFileSync(pemFile, 'utf8');
  } catch (e) {
    throw new CliError(`--key-pem ${pemFile}: cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return { material: createPrivateKey(pem), generated: false };
  } catch {
    // The parser's message may quote the file: say only what it is not.
    throw new CliError(`--key-pem ${pemFile} is not a private key PEM`);
  }
}

export async function importKeyCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      c: { type: 'string', short: 'c' },
      config: { type: 'string' },
      'key-hex': { type: 'string' },
      'key-pem': { type: 'string' },
      ca: { type: 'string', multiple: true },
      imds: { type: 'string' },
      'key-out': { type: 'string' },
      'derived-key-out': { type: 'string' },
      force: { type: 'boolean' },
    },
  });
  const configPath = values.c ?? values.config;
  if (positionals.length || !configPath) throw new CliError(`usage: ${usage}`);
  if (values['key-hex'] && values['key-pem']) throw new CliError('give --key-hex or --key-pem, not both');

  // Everything is checked before the vault is touched: the config, the key, the CA files and the
  // output paths. A failure after the import would leave a key in the vault that nobody holds.
  const cfg = parseImportKeyConfig((await readInput(configPath, 'config')).toString('utf8'));
  const kty = cfg.key.kty;
  const keyOut = values['key-out'];
  const derivedOut = values['derived-key-out'];
  if (derivedOut && kty !== 'RSA-HSM') throw new CliError(`--derived-key-out derives from an RSA key; key.kty is ${kty}`);
  if (keyOut && (values['key-hex'] || values['key-pem'])) throw new CliError('--key-out saves a key generated here; you gave the key (--key-hex/--key-pem)');
  if (keyOut && derivedOut && path.resolve(keyOut) === path.resolve(derivedOut)) throw new CliError('--key-out and --derived-key-out name the same file');
  const extraCaPem = readCaFiles(values.ca ?? []);
  const { material, generated } = loadMaterial(kty, values['key-hex'], values['key-pem']);
  const jwk = sdkJwkFor(kty, material, cfg.key.key_ops);
  const policy = policyFromConfig(cfg);
  const derived = derivedOut ? deriveSymmetricKey(material as KeyObject, cfg.key_derivation?.salt, cfg.key_derivation?.label) : undefined;
  const bytes = Buffer.isBuffer(material) ? material : (material.export({ type: 'pkcs8', format: 'der' }) as Buffer);

  const outputs: ReservedSecretFile[] = [];
  const fetch = createHttpsFetch({ extraCaPem, keepAlive: false });
  try {
    const keyFile = keyOut ? reserveSecretFile(keyOut, '--key-out', { force: values.force }) : undefined;
    if (keyFile) outputs.push(keyFile);
    const derivedFile = derivedOut ? reserveSecretFile(derivedOut, '--derived-key-out', { force: values.force }) : undefined;
    if (derivedFile) outputs.push(derivedFile);

    const url = vaultBaseUrl(cfg.key.akv.endpoint);
    const credential = cfg.key.akv.bearer_token
      ? staticTokenCredential(cfg.key.akv.bearer_token)
      : providerCredential(new TokenProvider({ clientId: cfg.identity?.client_id, ...workloadIdentityOption(), ...(values.imds ? { imdsEndpoint: values.imds } : {}), extraCaPem }));
    let imported;
    try {
      imported = await importReleasableKey({
        vaultEndpoint: cfg.key.akv.endpoint,
        name: cfg.key.kid,
        jwk,
        policy,
        credential,
        fetch,
        relaxedChallenge: LOOPBACK.has(url.hostname),
      });
    } catch (e) {
      throw explainImportFailure(e, values.imds);
    }

    io.out(imported.keyId);
    io.out(JSON.stringify(policy));
    io.err(`skr import-key: imported ${kty} ${cfg.key.kid} (material thumbprint ${thumbprint(bytes)})`);
    // Reserved up front, so writing can fail only on I/O errors; say then that the import happened.
    const commit = (file: ReservedSecretFile, data: string) => {
      try {
        file.commit(data);
      } catch (e) {
        throw new CliError(`${(e as Error).message}; the key WAS imported (${imported.keyId}) but this copy is not saved`, 1);
      }
    };
    if (keyFile) {
      commit(keyFile, Buffer.isBuffer(material) ? material.toString('hex') + '\n' : (material.export({ type: 'pkcs8', format: 'pem' }) as string));
      io.err(`skr import-key: generated key written to ${keyFile.path} (mode 0600)`);
    } else if (generated) {
      io.err('skr import-key: the key was generated here and not saved (pass --key-out FILE to keep a copy); only attested workloads can release it');
    }
    if (derivedFile && derived) {
      commit(derivedFile, derived.key.toString('hex') + '\n');
      io.err(`skr import-key: derived symmetric key written to ${derivedFile.path} (HKDF-SHA256, salt ${derived.salt.toString('hex')}, label "${derived.label}")`);
    }
    return 0;
  } finally {
    for (const o of outputs) o.abandon();
    fetch.destroy();
    if (derived) wipe(derived.key);
    wipe(bytes);
  }
}

/** Import failures a person can act on: say which flag or setting fixes them. */
function explainImportFailure(e: unknown, imds: string | undefined): unknown {
  if (!(e instanceof SkrError)) return e;
  if (e.code === 'ERR_VAULT_TLS') {
    return new CliError(`${e.message}; for a \`skr local\` emulator pass --ca with the state file's caCertPath (a private CA: --ca FILE)`, 1, e.code);
  }
  if (e.code === 'ERR_IMPORT_IDENTITY') {
    const where = imds ? `the IMDS at ${imds}` : 'the managed identity (IMDS); pass --imds URL for an emulator';
    return new CliError(`identity: ${e.message} (token from ${where}, or set key.akv.bearer_token)`, 1, e.code);
  }
  return e;
}
