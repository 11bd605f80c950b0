/**
 * Importing an exportable key bound to a release policy, from the reference's importkeyconfig.json:
 *   {"key": {"kid", "kty": "oct-HSM"|"RSA-HSM", "key_ops"?, "authority": {"endpoint"},
 *            "akv": {"endpoint", "api_version"?, "bearer_token"?}},
 *    "claims": [[{"claim", "equals"}]], "key_derivation"?: {"salt"?, "label"?}}
 * The release policy gets one `anyOf` entry per claim group, authority `https://<maa>`.
 */
import { createPrivateKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import type { TokenCredential } from '@azure/core-auth';
import { KeyClient, type JsonWebKey as SdkJsonWebKey } from '@azure/keyvault-keys';
import { InvalidInputError, SkrError, UpstreamError } from '../common/errors';
import type { FetchLike } from '../common/http';
import { buildReleasePolicy, type ReleasePolicy } from './policy';
import { vaultBaseUrl } from './release';
import { createSdkHttpClient } from './sdk-http-client';

export type ImportKty = 'oct-HSM' | 'RSA-HSM' | 'EC-HSM';

export interface ImportKeyConfig {
  key: {
    kid: string;
    kty: ImportKty;
    key_ops?: string[];
    authority: { endpoint: string };
    akv: { endpoint: string; api_version?: string; bearer_token?: string };
  };
  claims: { claim: string; equals: string }[][];
  key_derivation?: { salt?: string; label?: string };
  identity?: { client_id?: string };
}

/** The reference's default HKDF label for the symmetric key derived from an RSA key. */
export const DEFAULT_DERIVATION_LABEL = 'Symmetric Encryption Key';

function bad(path: string, msg: string): never {
  throw new InvalidInputError('ERR_IMPORT_CONFIG', `importkey config ${path}: ${msg}`);
}

function str(o: Record<string, unknown>, key: string, path: string, required = true): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') {
    if (required) bad(`${path}.${key}`, 'is required');
    return undefined;
  }
  if (typeof v !== 'string') bad(`${path}.${key}`, 'must be a string');
  return v;
}

function obj(v: unknown, path: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(path, 'must be an object');
  return v as Record<string, unknown>;
}

export function parseImportKeyConfig(input: string | unknown): ImportKeyConfig {
  let raw: unknown = input;
  if (typeof input === 'string') {
    try {
      raw = JSON.parse(input);
    } catch {
      bad('', 'is not JSON');
    }
  }
  const root = obj(raw, '(root)');
  const key = obj(root.key, 'key');
  const kid = str(key, 'kid', 'key')!;
  if (!/^[0-9a-zA-Z-]{1,127}$/.test(kid)) bad('key.kid', `"${kid}" is not a key name (letters, digits, dashes)`);
  const kty = (str(key, 'kty', 'key', false) ?? 'oct-HSM') as ImportKty;
  if (!['oct-HSM', 'RSA-HSM', 'EC-HSM'].includes(kty)) bad('key.kty', `"${kty}" is not oct-HSM, RSA-HSM or EC-HSM`);
  const authority = obj(key.authority, 'key.authority');
  const akv = obj(key.akv, 'key.akv');
  const claimsRaw = root.claims;
  if (!Array.isArray(claimsRaw) || claimsRaw.length === 0) bad('claims', 'must be a non-empty array of claim groups');
  const claims = claimsRaw.map((group, i) => {
    if (!Array.isArray(group) || group.length === 0) bad(`claims[${i}]`, 'must be a non-empty array');
    return group.map((c, j) => {
      const co = obj(c, `claims[${i}][${j}]`);
      const claim = str(co, 'claim', `claims[${i}][${j}]`)!;
      const eq = co.equals;
      if (typeof eq !== 'string' && typeof eq !== 'boolean' && typeof eq !== 'number') bad(`claims[${i}][${j}].equals`, 'must be a string');
      return { claim, equals: String(eq) };
    });
  });
  const keyOps = key.key_ops;
  if (keyOps !== undefined && (!Array.isArray(keyOps) || keyOps.some((x) => typeof x !== 'string'))) bad('key.key_ops', 'must be an array of strings');
  const cfg: ImportKeyConfig = {
    key: {
      kid,
      kty,
      ...(keyOps ? { key_ops: keyOps as string[] } : {}),
      authority: { endpoint: str(authority, 'endpoint', 'key.authority')! },
      akv: {
        endpoint: str(akv, 'endpoint', 'key.akv')!,
        ...(str(akv, 'api_version', 'key.akv', false) ? { api_version: str(akv, 'api_version', 'key.akv', false) } : {}),
        ...(str(akv, 'bearer_token', 'key.akv', false) ? { bearer_token: str(akv, 'bearer_token', 'key.akv', false) } : {}),
      },
    },
    claims,
  };
  if (root.key_derivation !== undefined && root.key_derivation !== null) {
    const kd = obj(root.key_derivation, 'key_derivation');
    cfg.key_derivation = { salt: str(kd, 'salt', 'key_derivation', false), label: str(kd, 'label', 'key_derivation', false) };
  }
  if (root.identity !== undefined && root.identity !== null) cfg.identity = { client_id: str(obj(root.identity, 'identity'), 'client_id', 'identity', false) };
  return cfg;
}

/** The release policy the reference builds from a config: authority https://<maa>, one anyOf per group. */
export function policyFromConfig(cfg: ImportKeyConfig): ReleasePolicy {
  const endpoint = cfg.key.authority.endpoint.replace(/^https?:\/\//, '').replace(/\/+$/, '');
  return buildReleasePolicy({ authority: `https://${endpoint}`, anyOfGroups: cfg.claims });
}

/**
 * The reference's symmetric key derived from an RSA key: HKDF-SHA256 over the private exponent d
 * (big-endian bytes), with the config's salt (hex; random 32 bytes when absent) and label.
 */
export function deriveSymmetricKey(rsaPrivateKey: KeyObject, saltHex?: string, label?: string): { key: Buffer; salt: Buffer; label: string } {
  const d = rsaPrivateKey.export({ format: 'jwk' }).d;
  if (!d) throw new InvalidInputError('ERR_IMPORT_KEY', 'key derivation needs an RSA private key');
  let salt: Buffer;
  if (saltHex) {
    if (!/^([0-9a-fA-F]{2})+$/.test(saltHex)) throw new InvalidInputError('ERR_IMPORT_CONFIG', 'key_derivation.salt must be hex');
    salt = Buffer.from(saltHex, 'hex');
  } else {
    salt = randomBytes(32);
  }
  const lbl = label || DEFAULT_DERIVATION_LABEL;
  const key = Buffer.from(hkdfSync('sha256', Buffer.from(d, 'base64url'), salt, Buffer.from(lbl, 'utf8'), 32));
  return { key, salt, label: lbl };
}

/** Key material for the SDK's importKey: oct bytes, or a private KeyObject as a JWK of bytes. */
export function sdkJwkFor(kty: ImportKty, material: Buffer | KeyObject, keyOps?: string[]): SdkJsonWebKey {
  const ops = keyOps ? { keyOps } : {};
  if (kty === 'oct-HSM') {
    if (!Buffer.isBuffer(material) || ![16, 24, 32].includes(material.length)) {
      throw new InvalidInputError('ERR_IMPORT_KEY', 'an oct-HSM key is 16, 24 or 32 bytes');
    }
    return { kty: 'oct-HSM', k: new Uint8Array(material), ...ops };
  }
  const key = Buffer.isBuffer(material) ? createPrivateKey({ key: material, format: 'der', type: 'pkcs8' }) : material;
  const j = key.export({ format: 'jwk' });
  const b = (s?: string) => (s ? new Uint8Array(Buffer.from(s, 'base64url')) : undefined);
  if (kty === 'RSA-HSM') {
    if (key.asymmetricKeyType !== 'rsa') throw new InvalidInputError('ERR_IMPORT_KEY', `an RSA-HSM key must be RSA, got ${key.asymmetricKeyType}`);
    return { kty: 'RSA-HSM', n: b(j.n), e: b(j.e), d: b(j.d), p: b(j.p), q: b(j.q), dp: b(j.dp), dq: b(j.dq), qi: b(j.qi), ...ops };
  }
  if (key.asymmetricKeyType !== 'ec') throw new InvalidInputError('ERR_IMPORT_KEY', `an EC-HSM key must be EC, got ${key.asymmetricKeyType}`);
  return { kty: 'EC-HSM', crv: j.crv as SdkJsonWebKey['crv'], x: b(j.x), y: b(j.y), d: b(j.d), ...ops };
}

export interface ImportOptions {
  vaultEndpoint: string;
  name: string;
  jwk: SdkJsonWebKey;
  policy: ReleasePolicy;
  credential: TokenCredential;
  fetch: FetchLike;
  /** Loopback emulators answer the challenge with Azure's resource on another domain. */
  relaxedChallenge?: boolean;
}

export interface ImportedKey {
  keyId: string;
  version: string;
}

export async function importReleasableKey(o: ImportOptions): Promise<ImportedKey> {
  const url = vaultBaseUrl(o.vaultEndpoint);
  const client = new KeyClient(url.origin, o.credential, {
    httpClient: createSdkHttpClient(o.fetch, { upstream: 'vault' }),
    disableChallengeResourceVerification: o.relaxedChallenge ?? false,
  });
  try {
    const k = await client.importKey(o.name, o.jwk, {
      exportable: true,
      hardwareProtected: true,
      releasePolicy: { contentType: 'application/json; charset=utf-8', encodedPolicy: new Uint8Array(Buffer.from(JSON.stringify(o.policy), 'utf8')) },
    });
    return { keyId: k.id ?? `${url.origin}/keys/${o.name}`, version: k.properties.version ?? '' };
  } catch (e) {
    const err = e as { statusCode?: number; message?: string; code?: string };
    if (err.statusCode === undefined) throw new UpstreamError('vault', `vault ${url.host} could not be reached: ${err.code ?? err.message}`, { cause: e });
    throw new SkrError('ERR_IMPORT_REFUSED', `vault ${url.host} refused the import (${err.statusCode}): ${err.message ?? ''}`);
  }
}
