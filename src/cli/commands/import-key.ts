import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
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
} from '../../akv/import-key';
import { applyPolicyTemplate } from '../../akv/policy-templates';
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
  'skr import-key -c importkeyconfig.json [--policy-template azure-cvm] [--key-hex HEX|FILE] [--key-pem FILE] [--ca FILE] [--imds URL] [--key-out FILE] [--derived-key-out FILE]\n' +
  '      import an exportable key bound to a release policy built from the config (oct-HSM, RSA-HSM or EC-HSM); generates the\n' +
  '      key when none is given (--key-out saves it, mode 0600). Token: key.akv.bearer_token, else the managed identity (--imds for an emulator).';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** Short, non-reversible identifier of key material for humans: never the key itself. */
export function thumbprint(material: Buffer): string {
  return createHash('sha256').update(material).digest('hex').slice(0, 16);
}

function parseJsonConfig(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text; // parseImportKeyConfig reports it
  }
}

function writeSecret(path: string, data: string | Buffer): void {
  writeFileSync(path, data, { mode: 0o600 });
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
      'policy-template': { type: 'string' },
    },
  });
  const configPath = values.c ?? values.config;
  if (positionals.length || !configPath) throw new CliError(`usage: ${usage}`);
  if (values['key-hex'] && values['key-pem']) throw new CliError('give --key-hex or --key-pem, not both');
  const text = (await readInput(configPath, 'config')).toString('utf8');
  const template = values['policy-template'];
  // A template supplies the claims (the config keeps the authority): parse the JSON first to add them.
  const cfg = parseImportKeyConfig(template === undefined ? text : applyPolicyTemplate(parseJsonConfig(text), template));
  const kty = cfg.key.kty;
  const extraCaPem = (values.ca ?? []).map((f) => readFileSync(f, 'utf8'));

  let material: Buffer | KeyObject;
  let generated = false;
  if (kty === 'oct-HSM') {
    if (values['key-pem']) throw new CliError('--key-pem is for RSA-HSM / EC-HSM keys; oct-HSM takes --key-hex');
    const hexArg = values['key-hex'];
    if (hexArg !== undefined) {
      const hex = (existsSync(hexArg) ? readFileSync(hexArg, 'utf8') : hexArg).trim();
      if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new CliError('--key-hex is not hex (give the hex string or a file holding it)');
      material = Buffer.from(hex, 'hex');
    } else {
      material = randomBytes(32);
      generated = true;
    }
  } else {
    if (values['key-hex']) throw new CliError(`--key-hex is for oct-HSM keys; ${kty} takes --key-pem`);
    if (values['key-pem']) {
      try {
        material = createPrivateKey(readFileSync(values['key-pem'], 'utf8'));
      } catch (e) {
        throw new CliError(`--key-pem ${values['key-pem']} is not a private key PEM: ${(e as Error).message}`);
      }
    } else {
      material = kty === 'RSA-HSM'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
        : generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
      generated = true;
    }
  }

  const jwk = sdkJwkFor(kty, material, cfg.key.key_ops);
  const policy = policyFromConfig(cfg);
  const fetch = createHttpsFetch({ extraCaPem, keepAlive: false });
  const url = vaultBaseUrl(cfg.key.akv.endpoint);
  const credential = cfg.key.akv.bearer_token
    ? staticTokenCredential(cfg.key.akv.bearer_token)
    : providerCredential(new TokenProvider({ clientId: cfg.identity?.client_id, ...workloadIdentityOption(), ...(values.imds ? { imdsEndpoint: values.imds } : {}), extraCaPem }));
  const imported = await importReleasableKey({
    vaultEndpoint: cfg.key.akv.endpoint,
    name: cfg.key.kid,
    jwk,
    policy,
    credential,
    fetch,
    relaxedChallenge: LOOPBACK.has(url.hostname),
  });
  fetch.destroy();

  io.out(imported.keyId);
  io.out(JSON.stringify(policy));
  const bytes = Buffer.isBuffer(material) ? material : (material.export({ type: 'pkcs8', format: 'der' }) as Buffer);
  io.err(`skr import-key: imported ${kty} ${cfg.key.kid} (material thumbprint ${thumbprint(bytes)})`);
  if (generated) {
    if (values['key-out']) {
      writeSecret(values['key-out'], Buffer.isBuffer(material) ? material.toString('hex') + '\n' : (material.export({ type: 'pkcs8', format: 'pem' }) as string));
      io.err(`skr import-key: generated key written to ${values['key-out']} (mode 0600)`);
    } else {
      io.err('skr import-key: the key was generated here and not saved (pass --key-out FILE to keep a copy); only attested workloads can release it');
    }
  }
  if (kty === 'RSA-HSM' && values['derived-key-out']) {
    const d = deriveSymmetricKey(material as KeyObject, cfg.key_derivation?.salt, cfg.key_derivation?.label);
    writeSecret(values['derived-key-out'], d.key.toString('hex') + '\n');
    io.err(`skr import-key: derived symmetric key written to ${values['derived-key-out']} (HKDF-SHA256, salt ${d.salt.toString('hex')}, label "${d.label}")`);
    wipe(d.key);
  }
  wipe(bytes);
  return 0;
}
