/**
 * The vault part of a key release: `POST /keys/<name>[/<version>]/release?api-version=7.4` with the
 * MAA token as target. A refusal becomes a precise ReleaseRefusedError, reading the key's release
 * policy to say which condition failed when the identity may read it.
 *
 * Two ways to make the call, one result:
 * - Direct (the fast path): for a vault whose audience is known before any request (an Azure
 *   Key Vault / Managed HSM name, whose cloud fixes the audience, or a configured loopback
 *   emulator), one POST over the shared keep-alive connection with the bearer token, retried like
 *   the SDK does (2×, backoff with jitter, Retry-After). The identity token is kept until 5 min
 *   before it expires, as the SDK's token refresher does.
 * - Through the Azure SDK's KeyClient (its 401 challenge flow, which checks that the challenge's
 *   resource belongs to the vault's domain) for any other allowlisted host. Which client holds
 *   which token is vault-clients.ts. The diagnosis of a 403 reads the key with the SDK either way.
 */
import type { KeyClient, KeyExportEncryptionAlgorithm } from '@azure/keyvault-keys';
import type { Endpoint } from '../common/endpoint';
import { decodeUtf8, MalformedAnswerError, MAX_UPSTREAM_BODY_BYTES } from '../common/bounded-body';
import { clip } from '../common/clip';
import { SkrError, UpstreamError } from '../common/errors';
import { parseRetryAfter, type FetchLike, type UpstreamAnswer, type UpstreamRequest, type UpstreamRequestInit } from '../common/http';
import { requestViaFetch } from '../common/https-fetch';
import type { AccessToken } from '@azure/core-auth';
import { resourceForVaultHost, MANAGED_HSM_RESOURCE, type TokenProvider, type VaultResource } from './identity';
import { decodeReleasePolicy } from './policy';
import { explainRefusal, type KeyPolicyRead, type ReleaseExplanation } from './release-explanation';
import { VaultClients } from './vault-clients';
import type { ReleaseEnc } from './wrap';

/**
 * The vault refused the release (or the identity): 403 with a precise reason. A 403 carries the
 * `explanation` (release-explanation.ts) for every front end to show as it is.
 */
export class ReleaseRefusedError extends SkrError {
  constructor(message: string, readonly vaultStatus: number, readonly vaultCode?: string, readonly explanation?: ReleaseExplanation) {
    super('ERR_RELEASE_REFUSED', message);
  }
}

export interface VaultReleaseRequest {
  vault: Endpoint;
  name: string;
  version?: string;
  /** The MAA token the vault checks against the key's release policy. */
  maaToken: string;
  enc: ReleaseEnc;
  /** The caller's own bearer token instead of the sidecar's identity. */
  accessToken?: string;
}

export interface VaultReleaseCall {
  /** Work worth starting while MAA attests: the identity token on a vault's first use (fails early if there is none). */
  prepare(vault: Endpoint, accessToken: string | undefined, signal?: AbortSignal): Promise<unknown> | undefined;
  /** The vault's release response (a compact JWS); refusals are ReleaseRefusedError, transport failures UpstreamError. */
  release(req: VaultReleaseRequest, signal?: AbortSignal): Promise<string>;
}

export interface KeyVaultReleaseOptions {
  tokens: TokenProvider;
  /** Outbound HTTPS (keep-alive, extra CAs, per-attempt timeout, telemetry) for the vault. */
  fetch: FetchLike;
  /**
   * Outbound for the direct POST without fetch's Response objects (the same client's `request`,
   * with its own telemetry); default: `fetch`, read through the bounded reader.
   */
  request?: UpstreamRequest;
  /** host:port endpoints that are Managed HSMs although their names do not say so (loopback emulators). */
  managedHsmEndpoints?: string[];
  /** host:port endpoints whose 401 challenge names a resource on another domain (loopback emulators only). */
  relaxedChallengeEndpoints?: string[];
  /** One HTTP attempt of the direct call (default 30 s). */
  attemptTimeoutMs?: number;
}

/** api-version of the release call, as the SDK's KeyClient (serviceVersion 7.4) sends it. */
export const RELEASE_API_VERSION = '7.4';
/** A release response is a JWS of a few KB (a wrapped RSA-4096 key included). */
const MAX_RELEASE_RESPONSE_BYTES = MAX_UPSTREAM_BODY_BYTES;
/** The SDK's retry policy for vault calls (vault-clients.ts): 2 retries, 200 ms base, 2 s cap. */
const RETRIES = 2;
const RETRY_BASE_MS = 200;
const RETRY_MAX_MS = 2000;
const RETRYABLE = new Set([408, 429, 500, 502, 503, 504]);
/** Refresh the identity token this long before it expires (the SDK's window). */
const TOKEN_REFRESH_MS = 5 * 60_000;
/** The diagnosis of a 403 (GET the key) gets at most this long, within the request's own deadline. */
const DIAGNOSIS_TIMEOUT_MS = 10_000;

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

export class KeyVaultRelease implements VaultReleaseCall {
  private readonly vaults: VaultClients;
  /** The identity's token per audience for the direct call (the SDK clients keep their own). */
  private readonly tokens = new Map<VaultResource, AccessToken>();
  private readonly request: UpstreamRequest;

  constructor(private readonly opts: KeyVaultReleaseOptions) {
    this.vaults = new VaultClients(opts.tokens, { fetch: opts.fetch, relaxedChallengeEndpoints: opts.relaxedChallengeEndpoints });
    this.request = opts.request ?? requestViaFetch(opts.fetch, { upstream: 'vault', maxResponseBytes: MAX_RELEASE_RESPONSE_BYTES });
  }

  /** The token audience of a vault: by its cloud, or Managed HSM for an endpoint configured as one. */
  resourceFor(vault: Endpoint): VaultResource {
    if (this.opts.managedHsmEndpoints?.includes(vault.host)) return MANAGED_HSM_RESOURCE;
    return resourceForVaultHost(vault);
  }

  /** Whether the audience of `vault` is known without asking it: an Azure vault name, or a configured emulator. */
  private isDirect(vault: Endpoint): boolean {
    return vault.service === 'vault' || vault.service === 'managedhsm' || Boolean(this.opts.managedHsmEndpoints?.includes(vault.host) || this.opts.relaxedChallengeEndpoints?.includes(vault.host));
  }

  prepare(vault: Endpoint, accessToken: string | undefined, signal?: AbortSignal): Promise<unknown> | undefined {
    if (accessToken) return undefined;
    const resource = this.resourceFor(vault);
    if (this.isDirect(vault)) return this.usableToken(resource) ? undefined : this.identityToken(resource, signal);
    return this.vaults.forIdentity(vault, resource).fresh ? this.opts.tokens.getAccessToken(resource, signal) : undefined;
  }

  async release(req: VaultReleaseRequest, signal?: AbortSignal): Promise<string> {
    if (this.isDirect(req.vault)) return this.releaseDirect(req, signal);
    const { vault, name, version, maaToken } = req;
    const client = this.clientFor(req);
    try {
      const result = await client.releaseKey(name, maaToken, {
        ...(version ? { version } : {}),
        algorithm: req.enc as KeyExportEncryptionAlgorithm,
        ...(signal ? { abortSignal: signal } : {}),
      });
      return result.value;
    } catch (e) {
      if (e instanceof SkrError) throw e; // our identity layer failed inside the SDK pipeline
      throw await this.explainFailure(e as RestErrorLike, (sig) => this.readKey(vault, name, version, req.accessToken, sig), name, version, maaToken, vault, signal);
    }
  }

  private clientFor(req: { vault: Endpoint; accessToken?: string }): KeyClient {
    return req.accessToken ? this.vaults.forCallerToken(req.vault, req.accessToken) : this.vaults.forIdentity(req.vault, this.resourceFor(req.vault)).client;
  }

  private usableToken(resource: VaultResource): AccessToken | undefined {
    const t = this.tokens.get(resource);
    return t && t.expiresOnTimestamp - TOKEN_REFRESH_MS > Date.now() ? t : undefined;
  }

  private async identityToken(resource: VaultResource, signal?: AbortSignal): Promise<AccessToken> {
    const cached = this.usableToken(resource);
    if (cached) return cached;
    const t = await this.opts.tokens.getAccessToken(resource, signal);
    this.tokens.set(resource, t);
    return t;
  }

  private async releaseDirect(req: VaultReleaseRequest, signal?: AbortSignal): Promise<string> {
    const { vault, name, version, maaToken } = req;
    const resource = this.resourceFor(vault);
    const token = req.accessToken ?? (await this.identityToken(resource, signal)).token;
    const url = new URL(`${vault.origin}/keys/${encodeURIComponent(name)}${version ? `/${encodeURIComponent(version)}` : ''}/release?api-version=${RELEASE_API_VERSION}`);
    const init: UpstreamRequestInit = {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ target: maaToken, enc: req.enc }),
    };
    // The same byte cap, strict UTF-8 and malformed-answer mapping as every other upstream (bounded-body.ts).
    const read = { upstream: 'vault', what: `vault ${vault.host} release response`, limit: MAX_RELEASE_RESPONSE_BYTES };
    let status: number;
    let text: string;
    try {
      const res = await this.send(url, init, signal);
      status = res.status;
      text = decodeUtf8(await res.body(), read);
    } catch (e) {
      if (e instanceof MalformedAnswerError) {
        // From the outbound client: a status line, header or framing no HTTP answer may have.
        throw new UpstreamError('vault', `${read.what}: malformed answer: ${e.message}`, { code: 'ERR_UPSTREAM_MALFORMED', cause: e });
      }
      if (e instanceof SkrError || signal?.aborted) throw e;
      const err = e as { name?: string; message?: string; code?: unknown; cause?: { code?: unknown } };
      const code = typeof err.cause?.code === 'string' ? err.cause.code : typeof err.code === 'string' ? err.code : err.name === 'TimeoutError' ? 'timeout' : undefined;
      throw await this.explainFailure({ ...(code ? { code } : {}), message: err.message ?? 'network error' }, (sig) => this.readKey(vault, name, version, req.accessToken, sig), name, version, maaToken, vault, signal);
    }
    if (status === 401 && !req.accessToken) this.tokens.delete(resource);
    if (status >= 200 && status < 300) {
      let value: unknown;
      try {
        value = (JSON.parse(text) as { value?: unknown } | null)?.value;
      } catch {
        // No cause: JSON.parse quotes the body in its message, and the body is the vault's text.
        throw new UpstreamError('vault', `${read.what}: malformed answer: the body is not JSON`, { code: 'ERR_UPSTREAM_MALFORMED', upstreamStatus: status });
      }
      return typeof value === 'string' ? value : '';
    }
    throw await this.explainFailure({ statusCode: status, response: { bodyAsText: text } }, (sig) => this.readKey(vault, name, version, req.accessToken, sig), name, version, maaToken, vault, signal);
  }

  /** One POST with the SDK's retry rules; the last answer (or error) is the caller's to explain. */
  private async send(url: URL, init: UpstreamRequestInit, signal?: AbortSignal): Promise<UpstreamAnswer> {
    const attemptInit: UpstreamRequestInit = { ...init, timeoutMs: this.opts.attemptTimeoutMs ?? 30_000, ...(signal ? { signal } : {}) };
    for (let attempt = 0; ; attempt++) {
      let res: UpstreamAnswer | undefined;
      try {
        res = await this.request(url, attemptInit);
        if (!RETRYABLE.has(res.status) || attempt >= RETRIES) return res;
      } catch (e) {
        // A malformed answer is not retried: the vault said something, and it was broken.
        if (signal?.aborted || attempt >= RETRIES || e instanceof MalformedAnswerError) throw e;
      }
      const after = res ? parseRetryAfter(res.header('retry-after') ?? null) : undefined;
      res?.discard();
      const delay = after !== undefined ? Math.min(RETRY_MAX_MS, after) : Math.floor(Math.random() * Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** attempt));
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(done, delay);
        function done(): void {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        }
        function onAbort(): void {
          clearTimeout(t);
          reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
        }
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    }
  }

  /**
   * GET the key (the `get` key permission) for what a release needs: does it exist, is it exportable,
   * its release policy. Failures are a result, not an exception: the caller explains them.
   */
  async readKey(vault: Endpoint, name: string, version: string | undefined, accessToken?: string, signal?: AbortSignal): Promise<KeyPolicyRead> {
    try {
      const key = await this.clientFor({ vault, ...(accessToken ? { accessToken } : {}) }).getKey(name, { ...(version ? { version } : {}), ...(signal ? { abortSignal: signal } : {}) });
      const encoded = key.properties.releasePolicy?.encodedPolicy;
      const read: KeyPolicyRead = { ok: true, keyId: clip(key.id ?? `${vault.origin}/keys/${name}`), exportable: key.properties.exportable === true };
      if (encoded) read.policy = decodeReleasePolicy({ data: Buffer.from(encoded).toString('base64url') });
      return read;
    } catch (e) {
      const err = e as RestErrorLike;
      const body = vaultErrorBody(err);
      const says = clip([body.code, body.message].filter(Boolean).join(': ') || 'no answer');
      if (err.statusCode === 403) return { ok: false, reason: 'forbidden', status: 403, detail: `GET key on ${vault.host} answered 403: ${says}` };
      if (err.statusCode === 404) return { ok: false, reason: 'not-found', status: 404, detail: `vault ${vault.host} has no key "${name}${version ? `/${version}` : ''}"` };
      if (err.statusCode !== undefined) return { ok: false, reason: 'unreadable', status: err.statusCode, detail: `GET key on ${vault.host} answered ${err.statusCode}: ${says}` };
      if (e instanceof SkrError) return { ok: false, reason: 'unreadable', detail: clip(e.message) };
      return { ok: false, reason: 'unreadable', detail: `vault ${vault.host} could not be reached: ${clip(String(err.code ?? err.message ?? 'network error'))}` };
    }
  }

  /** Turn a failed release into a precise error; a 403 is explained from the key's release policy when the identity may read it. */
  private async explainFailure(
    e: RestErrorLike,
    read: (signal: AbortSignal) => Promise<KeyPolicyRead>,
    name: string,
    version: string | undefined,
    maaToken: string,
    url: Endpoint,
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
      // The diagnosis is a courtesy: bounded, and never beyond the request's own deadline.
      const bound = AbortSignal.timeout(DIAGNOSIS_TIMEOUT_MS);
      const diag = signal ? AbortSignal.any([signal, bound]) : bound;
      const got: KeyPolicyRead = signal?.aborted
        ? { ok: false, reason: 'unreadable', detail: 'the request deadline passed before the key could be read' }
        : await read(diag).catch((x: unknown) => ({ ok: false, reason: 'unreadable', detail: clip(String((x as Error)?.message)) }) as const);
      const explanation = explainRefusal(got, maaToken, vaultSays);
      return new ReleaseRefusedError(`vault ${url.host} refused the release: ${vaultSays || '403'}; ${explanation.summary}`, status, body.code, explanation);
    }
    if (status >= 400 && status < 500) {
      return new ReleaseRefusedError(`vault ${url.host} refused the release: ${vaultSays || String(status)}`, status, body.code);
    }
    return new UpstreamError('vault', `vault ${url.host} answered ${status}${vaultSays ? `: ${vaultSays}` : ''}`, { upstreamStatus: status });
  }
}
