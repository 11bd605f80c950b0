/**
 * The key operations behind the emulator's routes: create, import, get, list versions and release.
 * Inputs are the parsed JSON bodies; outputs are the service's JSON answers. Every failure is a
 * VaultHttpError in the service's error shape.
 */
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { SkrError } from '../../common/errors';
import type { FetchLike } from '../../common/http';
import { encodeKeyHsm } from '../../akv/key-hsm';
import { decodeReleasePolicy, evaluateReleasePolicy, RELEASE_POLICY_CONTENT_TYPE, type ReleasePolicy } from '../../akv/policy';
import { signReleaseJws, type ReleaseJwsSigner } from './release-signer';
import { isReleaseEnc, RELEASE_ENCS, wrapKeyMaterial, type ReleaseEnc } from '../../akv/wrap';
import { badParameter, keyNotFound, releaseDenied, VaultHttpError } from './errors';
import { checkExportableKty, defaultKeyOps, generateKeyMaterial, importKeyMaterial, isValidKeyOps, publicJwkFields, type Flavour, type KeyMaterial } from './keys';
import { KEY_NAME_RE, newVersionId, type KeyStore, type StoredKey, type StoredKeyVersion, type StoredReleasePolicy } from './store';
import { verifyTargetToken } from './target-token';

export interface VaultContext {
  flavour: Flavour;
  /** `https://127.0.0.1:<port>`: the prefix of every key id. */
  baseUrl: string;
  store: KeyStore;
  signer: ReleaseJwsSigner;
  authorityFetch: FetchLike;
  now: () => Date;
}

const RECOVERABLE_DAYS = 90;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const seconds = (d: Date): number => Math.floor(d.getTime() / 1000);

export function keyId(ctx: VaultContext, name: string, version?: string): string {
  return `${ctx.baseUrl}/keys/${name}${version ? `/${version}` : ''}`;
}

function attributesJson(v: StoredKeyVersion): Record<string, unknown> {
  const a = v.attributes;
  return {
    enabled: a.enabled,
    ...(a.nbf !== undefined ? { nbf: a.nbf } : {}),
    ...(a.exp !== undefined ? { exp: a.exp } : {}),
    created: a.created,
    updated: a.updated,
    recoveryLevel: 'Recoverable+Purgeable',
    recoverableDays: RECOVERABLE_DAYS,
    exportable: a.exportable,
  };
}

function materialOf(v: StoredKeyVersion): KeyMaterial {
  return { kty: v.kty, material: Buffer.from(v.material, 'base64'), keySize: v.keySize, crv: v.crv };
}

/** A KeyBundle: the public JWK (never private parts), attributes, tags and release policy. */
export function keyBundle(ctx: VaultContext, key: StoredKey, v: StoredKeyVersion): Record<string, unknown> {
  return {
    key: { kid: keyId(ctx, key.name, v.version), kty: v.kty, key_ops: v.keyOps, ...publicJwkFields(materialOf(v)) },
    attributes: attributesJson(v),
    ...(v.tags ? { tags: v.tags } : {}),
    ...(v.releasePolicy ? { release_policy: v.releasePolicy } : {}),
  };
}

function checkName(name: string): void {
  if (!KEY_NAME_RE.test(name)) {
    throw badParameter(`The key name '${name}' is invalid: use 1-127 letters, digits and dashes.`);
  }
}

function parseTags(v: unknown): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) throw badParameter('"tags" must map names to strings.');
  return v as Record<string, string>;
}

function parseReleasePolicyField(v: unknown): StoredReleasePolicy | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw badParameter('"release_policy" must be an object.');
  const contentType = v.contentType ?? RELEASE_POLICY_CONTENT_TYPE;
  if (typeof contentType !== 'string') throw badParameter('"release_policy.contentType" must be a string.');
  if (v.immutable !== undefined && typeof v.immutable !== 'boolean') throw badParameter('"release_policy.immutable" must be a boolean.');
  try {
    decodeReleasePolicy({ data: v.data as string, contentType });
  } catch (err) {
    if (err instanceof SkrError) throw badParameter(`Invalid release policy: ${err.message}`);
    throw err;
  }
  return { contentType, data: v.data as string, ...(v.immutable !== undefined ? { immutable: v.immutable } : {}) };
}

function optionalInt(v: unknown, what: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw badParameter(`"${what}" must be an integer (seconds since 1970).`);
  return v;
}

/** Attributes, tags and release policy of a new version, with the service's SKR consistency rules. */
function newVersion(
  ctx: VaultContext,
  previous: StoredKey | undefined,
  body: Record<string, unknown>,
  material: () => KeyMaterial,
  keyOpsIn: unknown,
): StoredKeyVersion {
  const attrsIn = body.attributes ?? {};
  if (!isObject(attrsIn)) throw badParameter('"attributes" must be an object.');
  for (const k of ['enabled', 'exportable'] as const) {
    if (attrsIn[k] !== undefined && attrsIn[k] !== null && typeof attrsIn[k] !== 'boolean') throw badParameter(`"attributes.${k}" must be a boolean.`);
  }
  const exportable = attrsIn.exportable === true;
  let releasePolicy = parseReleasePolicyField(body.release_policy);
  const prior = previous?.versions[previous.versions.length - 1]?.releasePolicy;
  // The policy is required on the first exportable version; later versions inherit it.
  if (exportable && !releasePolicy && prior) releasePolicy = prior;
  if (prior?.immutable && releasePolicy && releasePolicy.data !== prior.data) {
    throw badParameter('The release policy of this key is immutable and cannot be changed.');
  }
  if (exportable && !releasePolicy) throw badParameter('AKV.SKR.1004: Exportable keys must have release policy.');
  if (!exportable && body.release_policy !== undefined && body.release_policy !== null) {
    throw badParameter('AKV.SKR.1005: Non-exportable keys must not have release policy.');
  }
  if (keyOpsIn !== undefined && keyOpsIn !== null && !isValidKeyOps(keyOpsIn)) throw badParameter('"key_ops" holds an unknown operation.');
  const now = seconds(ctx.now());
  const nbf = optionalInt(attrsIn.nbf, 'attributes.nbf');
  const exp = optionalInt(attrsIn.exp, 'attributes.exp');
  const tags = parseTags(body.tags);
  // Generate or import only once the request is known to be acceptable (RSA generation is slow).
  const km = material();
  if (exportable) checkExportableKty(km.kty);
  return {
    version: newVersionId(),
    kty: km.kty,
    ...(km.keySize !== undefined ? { keySize: km.keySize } : {}),
    ...(km.crv !== undefined ? { crv: km.crv } : {}),
    keyOps: (keyOpsIn as string[] | undefined | null) ?? defaultKeyOps(km.kty),
    material: km.material.toString('base64'),
    attributes: {
      enabled: attrsIn.enabled !== false,
      ...(nbf !== undefined ? { nbf } : {}),
      ...(exp !== undefined ? { exp } : {}),
      created: now,
      updated: now,
      exportable,
    },
    ...(tags ? { tags } : {}),
    ...(releasePolicy ? { releasePolicy } : {}),
  };
}

function store(ctx: VaultContext, name: string, v: StoredKeyVersion): Record<string, unknown> {
  const key = ctx.store.addVersion(name, v);
  return keyBundle(ctx, key, v);
}

/** `POST /keys/{name}/create` */
export function createKey(ctx: VaultContext, name: string, body: Record<string, unknown>): Record<string, unknown> {
  checkName(name);
  const km = () => generateKeyMaterial(body.kty, { keySize: body.key_size, crv: body.crv, publicExponent: body.public_exponent }, ctx.flavour);
  return store(ctx, name, newVersion(ctx, ctx.store.get(name), body, km, body.key_ops));
}

/** `PUT /keys/{name}` */
export function importKey(ctx: VaultContext, name: string, body: Record<string, unknown>): Record<string, unknown> {
  checkName(name);
  const km = () => importKeyMaterial(body.key, body.Hsm, ctx.flavour);
  const jwkOps = isObject(body.key) ? body.key.key_ops : undefined;
  return store(ctx, name, newVersion(ctx, ctx.store.get(name), body, km, jwkOps));
}

function findVersion(ctx: VaultContext, name: string, version?: string): { key: StoredKey; v: StoredKeyVersion } {
  const key = ctx.store.get(name);
  const v = version
    ? key?.versions.find((x) => x.version === version.toLowerCase())
    : key?.versions[key.versions.length - 1];
  if (!key || !v) throw keyNotFound(version ? `${name}/${version}` : name, ctx.flavour);
  return { key, v };
}

/** `GET /keys/{name}[/{version}]` */
export function getKey(ctx: VaultContext, name: string, version?: string): Record<string, unknown> {
  const { key, v } = findVersion(ctx, name, version);
  return keyBundle(ctx, key, v);
}

/** `GET /keys/{name}/versions`: one page, newest first. */
export function listKeyVersions(ctx: VaultContext, name: string): Record<string, unknown> {
  const key = ctx.store.get(name);
  if (!key) throw keyNotFound(name, ctx.flavour);
  const value = [...key.versions].reverse().map((v) => ({
    kid: keyId(ctx, key.name, v.version),
    attributes: attributesJson(v),
    ...(v.tags ? { tags: v.tags } : {}),
  }));
  return { value, nextLink: null };
}

/** The first RSA key in `x-ms-runtime.keys` meant for encryption (key_ops has encrypt, or use is enc). */
export function selectWrappingKey(claims: Record<string, unknown>): { publicKey: KeyObject; kid?: string } {
  const runtime = claims['x-ms-runtime'];
  const keys = isObject(runtime) && Array.isArray(runtime.keys) ? runtime.keys : [];
  const jwk = keys.find(
    (k): k is Record<string, unknown> =>
      isObject(k) && ((Array.isArray(k.key_ops) && k.key_ops.includes('encrypt')) || k.use === 'enc'),
  );
  if (!jwk) {
    throw badParameter("The target attestation token has no key with key_ops 'encrypt' (or use 'enc') in x-ms-runtime.keys.");
  }
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: { kty: jwk.kty, n: jwk.n, e: jwk.e } as JsonWebKey, format: 'jwk' });
  } catch (err) {
    throw badParameter(`The wrapping key in x-ms-runtime.keys is not a usable RSA key: ${(err as Error).message}`);
  }
  if (publicKey.asymmetricKeyType !== 'rsa') throw badParameter('The wrapping key in x-ms-runtime.keys is not an RSA key.');
  return { publicKey, ...(typeof jwk.kid === 'string' ? { kid: jwk.kid } : {}) };
}

export interface ReleaseRequest {
  target: string;
  nonce?: string;
  enc: ReleaseEnc;
}

export function parseReleaseBody(body: Record<string, unknown>): ReleaseRequest {
  if (typeof body.target !== 'string' || body.target.length === 0) throw badParameter("Property 'target' is required: the attestation token.");
  if (body.nonce !== undefined && body.nonce !== null && typeof body.nonce !== 'string') throw badParameter("Property 'nonce' must be a string.");
  const enc = body.enc ?? 'CKM_RSA_AES_KEY_WRAP';
  if (!isReleaseEnc(enc)) throw badParameter(`Invalid enc '${String(enc)}'. Supported: ${RELEASE_ENCS.join(', ')}.`);
  return { target: body.target, enc, ...(typeof body.nonce === 'string' ? { nonce: body.nonce } : {}) };
}

/**
 * `POST /keys/{name}[/{version}]/release`: verify the target token against the key's policy
 * authorities, evaluate the policy, wrap the key to the token's runtime key, sign the answer.
 */
export async function releaseKey(
  ctx: VaultContext,
  name: string,
  version: string | undefined,
  body: Record<string, unknown>,
  apiVersion: string,
): Promise<{ value: string }> {
  const req = parseReleaseBody(body);
  const { key, v } = findVersion(ctx, name, version);
  if (!v.attributes.enabled) throw new VaultHttpError(403, 'Forbidden', 'Operation release is not allowed on a disabled key.');
  if (!v.attributes.exportable || !v.releasePolicy) {
    throw badParameter(`The key ${keyId(ctx, key.name, v.version)} is not exportable and cannot be released.`);
  }
  const policy: ReleasePolicy = decodeReleasePolicy(v.releasePolicy);
  const claims = await verifyTargetToken(req.target, policy, { fetch: ctx.authorityFetch, now: ctx.now() });
  const evaluation = evaluateReleasePolicy(policy, claims);
  if (!evaluation.granted) throw releaseDenied();

  const kid = keyId(ctx, key.name, v.version);
  const wrapping = selectWrappingKey(claims);
  const ciphertext = wrapKeyMaterial(Buffer.from(v.material, 'base64'), wrapping.publicKey, req.enc);
  const keyHsm = encodeKeyHsm({ kid: wrapping.kid ?? kid, enc: req.enc, ciphertext });
  const payload = {
    request: {
      'api-version': apiVersion,
      enc: req.enc,
      kid: keyId(ctx, key.name, version),
      ...(req.nonce !== undefined ? { nonce: req.nonce } : {}),
    },
    response: {
      key: {
        key: { kid, kty: v.kty, key_ops: v.keyOps, key_hsm: keyHsm, ...publicJwkFields(materialOf(v)) },
        attributes: attributesJson(v),
        release_policy: { contentType: v.releasePolicy.contentType, data: v.releasePolicy.data },
      },
    },
  };
  return { value: signReleaseJws(payload, ctx.signer) };
}
