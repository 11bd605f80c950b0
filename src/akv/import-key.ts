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
import { ConfigError, InvalidInputError, SkrError, UpstreamError } from '../common/errors';
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

/** `<key-name>`, `<filled in by gen-policy.sh>`: the template's placeholders, never real values. */
const PLACEHOLDER = /<[^<>]*>/;

function str(o: Record<string, unknown>, key: string, path: string, required = true, secret = false): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') {
    if (required) bad(`${path}.${key}`, 'is required');
    return undefined;
  }
  if (typeof v !== 'string') bad(`${path}.${key}`, 'must be a string');
  if (PLACEHOLDER.test(v)) bad(`${path}.${key}`, secret ? 'is still a placeholder: fill it in' : `"${cut(v)}" is still a placeholder: fill it in`);
  return v;
}

/** Echo at most 80 characters of a config value in an error. */
function cut(v: string): string {
  return v.length > 80 ? `${v.slice(0, 80)}…` : v;
}

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;

/** An endpoint as the reference writes it: `host[:port]` (an `https://` prefix and a trailing `/` are tolerated). */
function endpoint(o: Record<string, unknown>, key: string, path: string): string {
  const v = str(o, key, path)!;
  const bare = v.replace(/^https:\/\//i, '').replace(/\/+$/, '');
  const m = /^([^:/?#@\s]+)(?::(\d{1,5}))?$/.exec(bare);
  const host = m?.[1].replace(/\.$/, '') ?? '';
  const port = m?.[2] === undefined ? 443 : Number(m[2]);
  const dns = host.length <= 253 && host.split('.').every((l) => DNS_LABEL.test(l));
  if (!m || !(dns || /^\d{1,3}(\.\d{1,3}){3}$/.test(host)) || port < 1 || port > 65535) {
    bad(`${path}.${key}`, `"${cut(v)}" is not an endpoint (host[:port])`);
  }
  return v;
}

const KEY_OPS = ['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey', 'import', 'export'];
const HEX = /^([0-9a-fA-F]{2})+$/;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

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
  if (!/^[0-9a-zA-Z-]{1,127}$/.test(kid)) bad('key.kid', `"${cut(kid)}" is not a key name (1-127 letters, digits, dashes)`);
  const kty = (str(key, 'kty', 'key', false) ?? 'oct-HSM') as ImportKty;
  if (!['oct-HSM', 'RSA-HSM', 'EC-HSM'].includes(kty)) bad('key.kty', `"${cut(kty)}" is not oct-HSM, RSA-HSM or EC-HSM`);
  const authority = obj(key.authority, 'key.authority');
  const akv = obj(key.akv, 'key.akv');
  const claimsRaw = root.claims;
  if (!Array.isArray(claimsRaw) || claimsRaw.length === 0) bad('claims', 'must be a non-empty array of claim groups');
  const claims = claimsRaw.map((group, i) => {
    if (!Array.isArray(group) || group.length === 0) {
      bad(`claims[${i}]`, 'must be a non-empty array of {claim, equals}: claims is a list of groups, [[{...}, {...}]] (wrap a flat list in [])');
    }
    return group.map((c, j) => {
      const co = obj(c, `claims[${i}][${j}]`);
      const claim = str(co, 'claim', `claims[${i}][${j}]`)!;
      const eq = co.equals;
      if (typeof eq !== 'string' && typeof eq !== 'boolean' && typeof eq !== 'number') bad(`claims[${i}][${j}].equals`, 'must be a string');
      const equals = String(eq);
      if (PLACEHOLDER.test(equals)) bad(`claims[${i}][${j}].equals`, `"${cut(equals)}" is still a placeholder: fill it in`);
      if (/(^|\.)x-ms-sevsnpvm-hostdata$/.test(claim) && !/^[0-9a-fA-F]{64}$/.test(equals)) {
        bad(`claims[${i}][${j}].equals`, `${claim} is the sha256 of the security policy: 64 hex digits, got "${cut(equals)}"`);
      }
      return { claim, equals };
    });
  });
  const keyOps = key.key_ops;
  if (keyOps !== undefined && (!Array.isArray(keyOps) || keyOps.some((x) => typeof x !== 'string' || !KEY_OPS.includes(x)))) {
    bad('key.key_ops', `must be an array of ${KEY_OPS.join(', ')}`);
  }
  const apiVersion = str(akv, 'api_version', 'key.akv', false);
  if (apiVersion !== undefined && !/^(api-version=)?[0-9A-Za-z.-]{1,32}$/.test(apiVersion)) bad('key.akv.api_version', `"${cut(apiVersion)}" is not an api-version`);
  // Never echoed: a malformed token may still be a real one.
  const bearer = str(akv, 'bearer_token', 'key.akv', false, true);
  if (bearer !== undefined && !/^[\x21-\x7e]{16,16384}$/.test(bearer)) bad('key.akv.bearer_token', 'is not an access token (printable, no spaces)');
  const cfg: ImportKeyConfig = {
    key: {
      kid,
      kty,
      ...(keyOps ? { key_ops: keyOps as string[] } : {}),
      authority: { endpoint: endpoint(authority, 'endpoint', 'key.authority') },
      akv: {
        endpoint: endpoint(akv, 'endpoint', 'key.akv'),
        ...(apiVersion ? { api_version: apiVersion } : {}),
        ...(bearer ? { bearer_token: bearer } : {}),
      },
    },
    claims,
  };
  if (root.key_derivation !== undefined && root.key_derivation !== null) {
    const kd = obj(root.key_derivation, 'key_derivation');
    const salt = str(kd, 'salt', 'key_derivation', false);
    if (salt !== undefined && !HEX.test(salt)) bad('key_derivation.salt', `"${cut(salt)}" is not hex (an even number of hex digits)`);
    const label = str(kd, 'label', 'key_derivation', false);
    if (label !== undefined && label.length > 1024) bad('key_derivation.label', 'is longer than 1024 characters');
    cfg.key_derivation = { salt, label };
  }
  if (root.identity !== undefined && root.identity !== null) {
    const clientId = str(obj(root.identity, 'identity'), 'client_id', 'identity', false);
    if (clientId !== undefined && !GUID.test(clientId)) bad('identity.client_id', `"${cut(clientId)}" is not a client id (a GUID)`);
    cfg.identity = { client_id: clientId };
  }
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
  const want = kty === 'RSA-HSM' ? 'rsa' : 'ec';
  if (key.asymmetricKeyType !== want) throw new InvalidInputError('ERR_IMPORT_KEY', `an ${kty} key must be ${want.toUpperCase()}, got ${key.asymmetricKeyType}`);
  if (want === 'ec' && !['prime256v1', 'secp384r1', 'secp521r1', 'secp256k1'].includes(key.asymmetricKeyDetails?.namedCurve ?? '')) {
    throw new InvalidInputError('ERR_IMPORT_KEY', `an EC-HSM key is on P-256, P-384, P-521 or P-256K, got ${key.asymmetricKeyDetails?.namedCurve ?? 'an unknown curve'}`);
  }
  const j = key.export({ format: 'jwk' });
  const b = (s?: string) => (s ? new Uint8Array(Buffer.from(s, 'base64url')) : undefined);
  if (kty === 'RSA-HSM') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (![2048, 3072, 4096].includes(bits)) throw new InvalidInputError('ERR_IMPORT_KEY', `an RSA-HSM key is 2048, 3072 or 4096 bits, got ${bits}`);
    return { kty: 'RSA-HSM', n: b(j.n), e: b(j.e), d: b(j.d), p: b(j.p), q: b(j.q), dp: b(j.dp), dq: b(j.dq), qi: b(j.qi), ...ops };
  }
  // Key Vault names secp256k1 `P-256K`.
  const crv = (j.crv === 'secp256k1' ? 'P-256K' : j.crv) as SdkJsonWebKey['crv'];
  return { kty: 'EC-HSM', crv, x: b(j.x), y: b(j.y), d: b(j.d), ...ops };
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
    throw importFailure(e, url.host);
  }
}

/** Certificate errors: the vault answered, but with a certificate this process does not trust. */
const TLS_TRUST_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function causes(e: unknown): unknown[] {
  const out: unknown[] = [];
  for (let c = e; c !== undefined && c !== null && out.length < 8; c = (c as { cause?: unknown }).cause) out.push(c);
  return out;
}

/**
 * Why an import failed, by step: the identity (no token), TLS (untrusted certificate), the
 * network (no answer), or the vault itself (an HTTP refusal).
 */
export function importFailure(e: unknown, host: string): SkrError {
  const chain = causes(e);
  const identity = chain.find((c) => c instanceof SkrError && (c.code === 'ERR_IDENTITY_TOKEN' || c.code === 'ERR_TOKEN_SCOPE' || c instanceof ConfigError));
  if (identity) {
    return new SkrError('ERR_IMPORT_IDENTITY', `could not get an access token for vault ${host} from the identity: ${(identity as Error).message}`, { cause: e });
  }
  const tls = chain.map((c) => (c as { code?: unknown }).code).find((c): c is string => typeof c === 'string' && TLS_TRUST_CODES.has(c));
  if (tls) {
    return new UpstreamError('vault', `TLS to vault ${host} failed (${tls}): its certificate is not trusted here`, { code: 'ERR_VAULT_TLS', cause: e });
  }
  const err = e as { statusCode?: number; message?: string; code?: string };
  if (err.statusCode === undefined) return new UpstreamError('vault', `vault ${host} could not be reached: ${err.code ?? err.message}`, { cause: e });
  return new SkrError('ERR_IMPORT_REFUSED', `vault ${host} refused the import (${err.statusCode}): ${err.message ?? ''}`);
}
