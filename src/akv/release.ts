/**
 * Secure key release, end to end for one request:
 *   ephemeral RSA wrapping key → MAA token carrying its public JWKS → vault `release` with an
 *   identity token → verify the JWS (signature, x5c chain, vault host) → decode `key_hsm` →
 *   unwrap (RSA-OAEP + AES-KWP) → JWK. Key buffers are wiped as soon as the JWK exists.
 *
 * What is not redone per request (issue 7): wrapping keys come pre-generated from a pool; an MAA
 * token is reused together with its wrapping key while valid (per MAA endpoint, with a margin
 * before exp); the identity token and the vault's auth challenge are cached in one KeyClient per
 * vault. Released keys are never cached, and a caller's own access_token never outlives its request.
 */
import type { JsonWebKey } from 'node:crypto';
import type { KeyClient, KeyExportEncryptionAlgorithm } from '@azure/keyvault-keys';
import { decodeJwt } from 'jose';
import { InvalidInputError, SkrError, UpstreamError, VerificationError } from '../common/errors';
import type { FetchLike } from '../common/http';
import { wipe } from '../common/bytes';
import { clip, quote } from '../common/clip';
import { registerSecret } from '../common/redact';
import { resourceForVaultHost, MANAGED_HSM_RESOURCE, type TokenProvider, type VaultResource } from './identity';
import { releasedKeyToJwk } from './jwk';
import { verifyReleaseJws } from './jws';
import { decodeKeyHsm } from './key-hsm';
import { decodeReleasePolicy, evaluateReleasePolicy, failedConditions } from './policy';
import { MaaTokenCache, type MaaTokenCacheOptions, type TokenLookup } from '../maa/token-cache';
import { VaultClients } from './vault-clients';
import { isReleaseEnc, unwrapKeyMaterial, type ReleaseEnc } from './wrap';
import { createWrappingKeyAsync, type WrappingKey } from './wrapping-key';
import type { WrappingKeyPool } from './wrapping-key-pool';

export const DEFAULT_RELEASE_ENC: ReleaseEnc = 'CKM_RSA_AES_KEY_WRAP';

/** How long released key material stays in the redaction registry (longer than any request deadline). */
const SECRET_TTL_MS = 10 * 60_000;

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
  /** Supplies a wrapping key; default: from `wrappingKeyPool`, else a fresh RSA-2048 key. */
  wrappingKey?: () => WrappingKey | Promise<WrappingKey>;
  /** Pre-generated wrapping keys (the sidecar starts one at start-up). */
  wrappingKeyPool?: WrappingKeyPool;
  /** Reuse of an MAA token with its wrapping key: default on with a 5 min margin; `{ enabled: false }` turns it off. */
  maaTokenReuse?: MaaTokenCacheOptions | MaaTokenCache<WrappingKey>;
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
    throw new InvalidInputError('ERR_KID', `kid ${quote(kid)} is not a key name or name/version (letters, digits and dashes)`);
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
    throw new InvalidInputError('ERR_AKV_ENDPOINT', `akv_endpoint ${quote(endpoint)} is not a host name`);
  }
  if (url.protocol !== 'https:') throw new InvalidInputError('ERR_AKV_ENDPOINT', `akv_endpoint ${quote(endpoint)} must use https`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username || url.password) {
    throw new InvalidInputError('ERR_AKV_ENDPOINT', `akv_endpoint ${quote(endpoint)} must be a bare host (no path, query or credentials)`);
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

/** Vault answers that say the target token itself was not accepted: a cached token must not be offered again. */
const TOKEN_REFUSALS = new Set([400, 403]);

/**
 * The verified response must be for the key that was asked for, on the vault that was called: a
 * signed release of another key (or from another vault with a wildcard certificate) is refused.
 */
export function checkReleasedKid(kid: unknown, url: URL, name: string, version: string | undefined): void {
  const refuse = (why: string): never => {
    throw new VerificationError('release-kid', `release response is for another key: ${why}`);
  };
  if (typeof kid !== 'string') refuse('it names no key id');
  let u: URL;
  try {
    u = new URL(kid as string);
  } catch {
    return refuse(`key id ${JSON.stringify(kid)} is not a URL`);
  }
  const parts = u.pathname.split('/').filter(Boolean);
  if (u.origin !== url.origin) refuse(`key id ${kid} is not on ${url.origin}`);
  if (parts[0] !== 'keys' || parts[1]?.toLowerCase() !== name.toLowerCase()) refuse(`key id ${kid} is not key "${name}"`);
  if (version && parts[2]?.toLowerCase() !== version.toLowerCase()) refuse(`key id ${kid} is not version ${version}`);
}

export class KeyReleaseClient {
  /** MAA tokens with the wrapping keys they bind, by MAA origin. */
  readonly maaTokens: MaaTokenCache<WrappingKey>;
  private readonly vaults: VaultClients;

  constructor(private readonly opts: KeyReleaseClientOptions) {
    this.maaTokens = opts.maaTokenReuse instanceof MaaTokenCache ? opts.maaTokenReuse : new MaaTokenCache<WrappingKey>(opts.maaTokenReuse);
    this.vaults = new VaultClients(opts.tokens, { fetch: opts.fetch, relaxedChallengeEndpoints: opts.relaxedChallengeEndpoints });
  }

  private resourceFor(url: URL): VaultResource {
    if (this.opts.managedHsmEndpoints?.includes(url.host)) return MANAGED_HSM_RESOURCE;
    return resourceForVaultHost(url.host);
  }

  private takeWrappingKey(): Promise<WrappingKey> {
    if (this.opts.wrappingKey) return Promise.resolve(this.opts.wrappingKey());
    if (this.opts.wrappingKeyPool) return this.opts.wrappingKeyPool.take();
    return createWrappingKeyAsync();
  }

  /** A token for `maaEndpoint` and the wrapping key it binds: reused while valid, else a new key attested now. */
  private attested(maaEndpoint: string, signal?: AbortSignal): Promise<TokenLookup<WrappingKey>> {
    return this.maaTokens.get(
      maaEndpoint,
      async (s) => {
        const wrapping = await this.takeWrappingKey();
        return { token: await this.opts.attest(maaEndpoint, wrapping.runtimeData, s), binding: wrapping };
      },
      signal,
    );
  }

  async release(req: KeyReleaseRequest, signal?: AbortSignal): Promise<ReleasedKey> {
    const { name, version } = parseKid(req.kid);
    const url = vaultBaseUrl(req.akvEndpoint);
    const enc = req.enc ?? DEFAULT_RELEASE_ENC;
    if (!isReleaseEnc(enc)) throw new InvalidInputError('ERR_RELEASE_ENC', `enc "${String(enc)}" is not supported`);
    const resource = this.resourceFor(url);

    // The SDK's KeyClient.releaseKey carries everything this call needs; it runs the 401 challenge
    // flow and its own retry policy. See vault-clients.ts for which client holds which token.
    let client: KeyClient;
    let lookup: TokenLookup<WrappingKey>;
    if (req.accessToken) {
      client = this.vaults.forCallerToken(url, req.accessToken);
      lookup = await this.attested(req.maaEndpoint, signal);
    } else {
      const identity = this.vaults.forIdentity(url, resource);
      client = identity.client;
      // On a vault's first use, get the identity token while MAA works (and fail early if there is none).
      [lookup] = await Promise.all([
        this.attested(req.maaEndpoint, signal),
        identity.fresh ? this.opts.tokens.getAccessToken(resource, signal) : undefined,
      ]);
    }
    const { token: maaToken, binding: wrapping } = lookup;
    let jws: string;
    try {
      const result = await client.releaseKey(name, maaToken, {
        ...(version ? { version } : {}),
        algorithm: enc as KeyExportEncryptionAlgorithm,
        ...(signal ? { abortSignal: signal } : {}),
      });
      jws = result.value;
      if (typeof jws !== 'string' || jws === '') throw new UpstreamError('vault', `vault ${url.host} answered a release without a value`, { code: 'ERR_RELEASE_RESPONSE' });
    } catch (e) {
      if (e instanceof SkrError) throw e; // our identity layer failed inside the SDK pipeline
      const status = (e as RestErrorLike).statusCode;
      if (status !== undefined && TOKEN_REFUSALS.has(status)) this.maaTokens.invalidate(req.maaEndpoint, maaToken);
      throw await this.explainFailure(e as RestErrorLike, client, name, version, maaToken, url, signal);
    }

    let payload: Record<string, unknown>;
    try {
      payload = verifyReleaseJws(jws, { vaultHost: url.hostname, extraCaPem: this.opts.extraCaPem });
    } catch (e) {
      // Not a JWS at all is a malformed answer (502); a JWS that does not verify stays a refusal (403).
      if (e instanceof VerificationError && e.step === 'jws-format') {
        throw new UpstreamError('vault', `vault ${url.host} answered a malformed release: ${e.message}`, { code: 'ERR_UPSTREAM_MALFORMED', cause: e });
      }
      throw e;
    }
    const released = (payload.response as { key?: { key?: Record<string, unknown> } } | undefined)?.key?.key;
    if (!released || typeof released.key_hsm !== 'string' || typeof released.kty !== 'string') {
      throw new UpstreamError('vault', 'release response carries no key with key_hsm', { code: 'ERR_RELEASE_RESPONSE' });
    }
    checkReleasedKid(released.kid, url, name, version);
    const keyHsm = decodeKeyHsm(released.key_hsm);
    const material = unwrapKeyMaterial(keyHsm.ciphertext, wrapping.privateKey, keyHsm.enc as ReleaseEnc);
    try {
      const keyId = typeof released.kid === 'string' ? released.kid : `${url.origin}/keys/${name}${version ? `/${version}` : ''}`;
      const keyOps = Array.isArray(released.key_ops) ? (released.key_ops.filter((x) => typeof x === 'string') as string[]) : undefined;
      const jwk = releasedKeyToJwk({ kty: released.kty, material, kid: keyId, ...(keyOps ? { key_ops: keyOps } : {}) });
      // Redacted from anything logged while this release is still around (its deadline at most).
      for (const f of ['k', 'd', 'p', 'q', 'dp', 'dq', 'qi'] as const) registerSecret((jwk as Record<string, unknown>)[f] as string | undefined, { ttlMs: SECRET_TTL_MS });
      return { jwk, keyId, vaultHost: url.host };
    } finally {
      wipe(material, keyHsm.ciphertext);
    }
  }

  /** Turn a failed release into a precise error, reading the key's policy when the identity may. */
  private async explainFailure(
    e: RestErrorLike,
    client: KeyClient,
    name: string,
    version: string | undefined,
    maaToken: string,
    url: URL,
    signal?: AbortSignal,
  ): Promise<Error> {
    const status = e.statusCode;
    const body = vaultErrorBody(e);
    // Vault text is outside input: quoted capped (and redacted on the way out).
    const vaultSays = clip([body.code, body.message].filter(Boolean).join(': '));
    if (status === undefined) {
      return new UpstreamError('vault', `vault ${url.host} could not be reached: ${clip(String(e.code ?? e.message ?? 'network error'))}`, { cause: e });
    }
    if (status === 401) {
      return new ReleaseRefusedError(`identity: vault ${url.host} did not accept the access token (${vaultSays || '401'})`, status, body.code);
    }
    if (status === 404) {
      return new ReleaseRefusedError(`vault ${url.host} has no key "${name}${version ? `/${version}` : ''}" (${vaultSays || '404'})`, status, body.code);
    }
    if (status === 403) {
      const failed = (body.innererror?.failedConditions as unknown[] | undefined) ?? undefined;
      // The diagnosis is a courtesy: it must not outlive the request's deadline (and hold its slot).
      const detail = signal?.aborted ? undefined : await this.policyFailure(client, name, version, maaToken, vaultSays, signal).catch(() => undefined);
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
  private async policyFailure(
    client: KeyClient,
    name: string,
    version: string | undefined,
    maaToken: string,
    vaultSays: string,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const key = await client.getKey(name, { ...(version ? { version } : {}), ...(signal ? { abortSignal: signal } : {}) });
    const encoded = key.properties.releasePolicy?.encodedPolicy;
    if (!encoded) return 'the key has no release policy (it must be exportable with one)';
    const policy = decodeReleasePolicy({ data: Buffer.from(encoded).toString('base64url') });
    const ev = evaluateReleasePolicy(policy, decodeJwt(maaToken) as Record<string, unknown>);
    if (ev.granted) {
      // The claims pass, so the vault objected to the token itself or to the caller.
      const exp = (decodeJwt(maaToken) as { exp?: unknown }).exp;
      if (typeof exp === 'number' && exp * 1000 < Date.now()) return 'the MAA token has expired';
      if (/verif|signature|expired|statement/i.test(vaultSays)) {
        return "the token's claims satisfy the release policy, but the vault could not verify the MAA token itself (signature, expiry, or the authority's signing keys)";
      }
      if (/rbac|authoriz|permission|not allowed/i.test(vaultSays)) {
        return 'the release policy grants this token, so the refusal is about the identity: check its release permission/role';
      }
      return "the token's claims satisfy the release policy: check that the vault can verify the MAA token (authority reachable, token not expired) and that the identity holds the release permission/role";
    }
    const failed = failedConditions(ev);
    if (!failed.length) return `no authority in the release policy matches the token issuer ${ev.tokenIssuer ?? '(none)'}`;
    return `release policy conditions not met: ${failed
      .map((c) => `${c.claim} ${c.operator} ${JSON.stringify(c.expected)} (token has ${c.present ? JSON.stringify(c.actual) : 'no such claim'})`)
      .join('; ')}`;
  }
}
