/**
 * Secure key release, end to end for one request:
 *   ephemeral RSA wrapping key → MAA token carrying its public JWKS → vault `release` with an
 *   identity token → verify the JWS (signature, x5c chain, vault host) → decode `key_hsm` →
 *   unwrap (RSA-OAEP + AES-KWP) → JWK. Key buffers are wiped as soon as the JWK exists.
 */
import type { JsonWebKey } from 'node:crypto';
import type { TokenCredential } from '@azure/core-auth';
import { KeyClient, type KeyExportEncryptionAlgorithm } from '@azure/keyvault-keys';
import { decodeJwt } from 'jose';
import { InvalidInputError, SkrError, UpstreamError } from '../common/errors';
import type { FetchLike } from '../common/http';
import { wipe } from '../common/bytes';
import { resourceForVaultHost, MANAGED_HSM_RESOURCE, type TokenProvider, type VaultResource } from './identity';
import { releasedKeyToJwk } from './jwk';
import { verifyReleaseJws } from './jws';
import { decodeKeyHsm } from './key-hsm';
import { decodeReleasePolicy, evaluateReleasePolicy, failedConditions } from './policy';
import { createSdkHttpClient } from './sdk-http-client';
import { staticTokenCredential } from './credentials';
import { isReleaseEnc, unwrapKeyMaterial, type ReleaseEnc } from './wrap';
import { createWrappingKey, type WrappingKey } from './wrapping-key';

export const DEFAULT_RELEASE_ENC: ReleaseEnc = 'CKM_RSA_AES_KEY_WRAP';

export interface KeyReleaseRequest {
  maaEndpoint: string;
  /** Bare vault host (`myvault.vault.azure.net`), host:port, or an https URL. */
  akvEndpoint: string;
  /** `name` or `name/version`. */
  kid: string;
  /** Bearer token to use instead of the managed identity. */
  accessToken?: string;
  enc?: ReleaseEnc;
}

export interface ReleasedKey {
  jwk: JsonWebKey;
  /** Full key id the vault released (`https://<vault>/keys/<name>/<version>`). */
  keyId: string;
  vaultHost: string;
}

export interface KeyReleaseClientOptions {
  /** MAA token for evidence binding `runtimeData` (the wrapping key's JWKS). */
  attest: (maaEndpoint: string, runtimeData: Buffer, signal?: AbortSignal) => Promise<string>;
  tokens: TokenProvider;
  /** Outbound HTTPS (keep-alive, extra CAs) for the vault. */
  fetch: FetchLike;
  /** Extra roots for the release JWS chain (the local CA in local mode). */
  extraCaPem?: string[];
  /** host:port endpoints that are Managed HSMs although their names do not say so (loopback emulators). */
  managedHsmEndpoints?: string[];
  /** host:port endpoints whose 401 challenge names a resource on another domain (loopback emulators only). */
  relaxedChallengeEndpoints?: string[];
  /** Supplies a wrapping key; default a fresh RSA-2048 key per release. */
  wrappingKey?: () => WrappingKey;
}

/** The vault refused the release (or the identity): 403 with a precise reason. */
export class ReleaseRefusedError extends SkrError {
  constructor(message: string, readonly vaultStatus: number, readonly vaultCode?: string) {
    super('ERR_RELEASE_REFUSED', message, { status: 403 });
  }
}

const KEY_NAME = /^[0-9a-zA-Z-]{1,127}$/;
const KEY_VERSION = /^[0-9a-zA-Z]{1,64}$/;

export function parseKid(kid: string): { name: string; version?: string } {
  const parts = kid.trim().split('/');
  if (parts.length > 2 || !KEY_NAME.test(parts[0]) || (parts.length === 2 && !KEY_VERSION.test(parts[1]))) {
    throw new InvalidInputError('ERR_KID', `kid "${kid}" is not a key name or name/version (letters, digits and dashes)`);
  }
  return parts.length === 2 ? { name: parts[0], version: parts[1] } : { name: parts[0] };
}

/** `https://host[:port]` from a bare host, host:port or https URL; anything else is refused. */
export function vaultBaseUrl(endpoint: string): URL {
  const e = endpoint.trim();
  let url: URL;
  try {
    url = new URL(e.includes('://') ? e : `https://${e}`);
  } catch {
    throw new InvalidInputError('ERR_AKV_ENDPOINT', `akv_endpoint "${endpoint}" is not a host name`);
  }
  if (url.protocol !== 'https:') throw new InvalidInputError('ERR_AKV_ENDPOINT', `akv_endpoint "${endpoint}" must use https`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username || url.password) {
    throw new InvalidInputError('ERR_AKV_ENDPOINT', `akv_endpoint "${endpoint}" must be a bare host (no path, query or credentials)`);
  }
  return new URL(url.origin);
}

interface RestErrorLike {
  statusCode?: number;
  code?: string;
  message?: string;
  details?: unknown;
  response?: { bodyAsText?: string | null };
}

function vaultErrorBody(e: RestErrorLike): { code?: string; message?: string; innererror?: Record<string, unknown> } {
  const fromDetails = (e.details as { error?: Record<string, unknown> } | undefined)?.error;
  let err = fromDetails;
  if (!err && e.response?.bodyAsText) {
    try {
      err = (JSON.parse(e.response.bodyAsText) as { error?: Record<string, unknown> }).error;
    } catch {
      err = undefined;
    }
  }
  return {
    code: typeof err?.code === 'string' ? err.code : e.code,
    message: typeof err?.message === 'string' ? err.message : e.message,
    innererror: (err?.innererror as Record<string, unknown> | undefined) ?? undefined,
  };
}

export class KeyReleaseClient {
  constructor(private readonly opts: KeyReleaseClientOptions) {}

  private resourceFor(url: URL): VaultResource {
    if (this.opts.managedHsmEndpoints?.includes(url.host)) return MANAGED_HSM_RESOURCE;
    return resourceForVaultHost(url.host);
  }

  private keyClient(url: URL, credential: TokenCredential): KeyClient {
    return new KeyClient(url.origin, credential, {
      httpClient: createSdkHttpClient(this.opts.fetch),
      serviceVersion: '7.4',
      disableChallengeResourceVerification: this.opts.relaxedChallengeEndpoints?.includes(url.host) ?? false,
      retryOptions: { maxRetries: 2, retryDelayInMs: 200, maxRetryDelayInMs: 2000 },
    });
  }

  async release(req: KeyReleaseRequest, signal?: AbortSignal): Promise<ReleasedKey> {
    const { name, version } = parseKid(req.kid);
    const url = vaultBaseUrl(req.akvEndpoint);
    const enc = req.enc ?? DEFAULT_RELEASE_ENC;
    if (!isReleaseEnc(enc)) throw new InvalidInputError('ERR_RELEASE_ENC', `enc "${String(enc)}" is not supported`);
    const resource = this.resourceFor(url);

    const wrapping = (this.opts.wrappingKey ?? createWrappingKey)();
    const maaToken = await this.opts.attest(req.maaEndpoint, wrapping.runtimeData, signal);
    const accessToken = await this.opts.tokens.getToken(resource, req.accessToken, signal);

    // The SDK's KeyClient.releaseKey carries everything this call needs; it runs the 401 challenge
    // flow and its own retry policy. A fresh client per request keeps one caller's token out of
    // another's: the SDK caches the credential's token inside the client.
    const client = this.keyClient(url, staticTokenCredential(accessToken));
    let jws: string;
    try {
      const result = await client.releaseKey(name, maaToken, {
        ...(version ? { version } : {}),
        algorithm: enc as KeyExportEncryptionAlgorithm,
        ...(signal ? { abortSignal: signal } : {}),
      });
      jws = result.value;
    } catch (e) {
      throw await this.explainFailure(e as RestErrorLike, client, name, version, maaToken, url);
    }

    const payload = verifyReleaseJws(jws, { vaultHost: url.hostname, extraCaPem: this.opts.extraCaPem });
    const released = (payload.response as { key?: { key?: Record<string, unknown> } } | undefined)?.key?.key;
    if (!released || typeof released.key_hsm !== 'string' || typeof released.kty !== 'string') {
      throw new UpstreamError('vault', 'release response carries no key with key_hsm', { code: 'ERR_RELEASE_RESPONSE' });
    }
    const keyHsm = decodeKeyHsm(released.key_hsm);
    const material = unwrapKeyMaterial(keyHsm.ciphertext, wrapping.privateKey, keyHsm.enc as ReleaseEnc);
    try {
      const keyId = typeof released.kid === 'string' ? released.kid : `${url.origin}/keys/${name}${version ? `/${version}` : ''}`;
      const keyOps = Array.isArray(released.key_ops) ? (released.key_ops.filter((x) => typeof x === 'string') as string[]) : undefined;
      const jwk = releasedKeyToJwk({ kty: released.kty, material, kid: keyId, ...(keyOps ? { key_ops: keyOps } : {}) });
      return { jwk, keyId, vaultHost: url.host };
    } finally {
      wipe(material, keyHsm.ciphertext);
    }
  }

  /** Turn a failed release into a precise error, reading the key's policy when the identity may. */
  private async explainFailure(e: RestErrorLike, client: KeyClient, name: string, version: string | undefined, maaToken: string, url: URL): Promise<Error> {
    const status = e.statusCode;
    const body = vaultErrorBody(e);
    const vaultSays = [body.code, body.message].filter(Boolean).join(': ');
    if (status === undefined) {
      return new UpstreamError('vault', `vault ${url.host} could not be reached: ${e.code ?? e.message ?? 'network error'}`, { cause: e });
    }
    if (status === 401) {
      return new ReleaseRefusedError(`identity: vault ${url.host} did not accept the access token (${vaultSays || '401'})`, status, body.code);
    }
    if (status === 404) {
      return new ReleaseRefusedError(`vault ${url.host} has no key "${name}${version ? `/${version}` : ''}" (${vaultSays || '404'})`, status, body.code);
    }
    if (status === 403) {
      const failed = (body.innererror?.failedConditions as unknown[] | undefined) ?? undefined;
      const detail = await this.policyFailure(client, name, version, maaToken).catch(() => undefined);
      const why =
        detail ??
        (failed?.length
          ? `failed conditions: ${failed.map((f) => (typeof f === 'string' ? f : JSON.stringify(f))).join('; ')}`
          : 'check that the token satisfies the key release policy (x-ms-sevsnpvm-hostdata = sha256 of the deployed ccePolicy, ' +
            'the authority = this MAA endpoint), and that the identity holds the "Key Vault Crypto Service Release User" role ' +
            '(or the release permission)');
      return new ReleaseRefusedError(`vault ${url.host} refused the release: ${vaultSays || '403'}; ${why}`, status, body.code);
    }
    if (status >= 400 && status < 500) {
      return new ReleaseRefusedError(`vault ${url.host} refused the release: ${vaultSays || String(status)}`, status, body.code);
    }
    return new UpstreamError('vault', `vault ${url.host} answered ${status}${vaultSays ? `: ${vaultSays}` : ''}`, { upstreamStatus: status });
  }

  /** When the identity can read the key, evaluate its release policy against the token and name what failed. */
  private async policyFailure(client: KeyClient, name: string, version: string | undefined, maaToken: string): Promise<string | undefined> {
    const key = await client.getKey(name, version ? { version } : {});
    const encoded = key.properties.releasePolicy?.encodedPolicy;
    if (!encoded) return 'the key has no release policy (it must be exportable with one)';
    const policy = decodeReleasePolicy({ data: Buffer.from(encoded).toString('base64url') });
    const ev = evaluateReleasePolicy(policy, decodeJwt(maaToken) as Record<string, unknown>);
    if (ev.granted) return 'the release policy grants this token, so the refusal is about the identity: check its release permission/role';
    const failed = failedConditions(ev);
    if (!failed.length) return `no authority in the release policy matches the token issuer ${ev.tokenIssuer ?? '(none)'}`;
    return `release policy conditions not met: ${failed
      .map((c) => `${c.claim} ${c.operator} ${JSON.stringify(c.expected)} (token has ${c.present ? JSON.stringify(c.actual) : 'no such claim'})`)
      .join('; ')}`;
  }
}
