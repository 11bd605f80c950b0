/**
 * The vault part of a key release: `POST /keys/<name>[/<version>]/release` with the MAA token as
 * target, through the Azure SDK's KeyClient (its 401 challenge flow and retry policy). Which client
 * holds which token is vault-clients.ts. A refusal becomes a precise ReleaseRefusedError, reading
 * the key's release policy to say which condition failed when the identity may read it.
 */
import type { KeyClient, KeyExportEncryptionAlgorithm } from '@azure/keyvault-keys';
import { decodeJwt } from 'jose';
import type { Endpoint } from '../common/endpoint';
import { SkrError, UpstreamError } from '../common/errors';
import type { FetchLike } from '../common/http';
import { resourceForVaultHost, MANAGED_HSM_RESOURCE, type TokenProvider, type VaultResource } from './identity';
import { decodeReleasePolicy, evaluateReleasePolicy, failedConditions } from './policy';
import { VaultClients } from './vault-clients';
import type { ReleaseEnc } from './wrap';

/** The vault refused the release (or the identity): 403 with a precise reason. */
export class ReleaseRefusedError extends SkrError {
  constructor(message: string, readonly vaultStatus: number, readonly vaultCode?: string) {
    super('ERR_RELEASE_REFUSED', message, { status: 403 });
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

export interface SdkVaultReleaseOptions {
  tokens: TokenProvider;
  /** Outbound HTTPS (keep-alive, extra CAs, per-attempt timeout, telemetry) for the vault. */
  fetch: FetchLike;
  /** host:port endpoints that are Managed HSMs although their names do not say so (loopback emulators). */
  managedHsmEndpoints?: string[];
  /** host:port endpoints whose 401 challenge names a resource on another domain (loopback emulators only). */
  relaxedChallengeEndpoints?: string[];
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

export class SdkVaultRelease implements VaultReleaseCall {
  private readonly vaults: VaultClients;

  constructor(private readonly opts: SdkVaultReleaseOptions) {
    this.vaults = new VaultClients(opts.tokens, { fetch: opts.fetch, relaxedChallengeEndpoints: opts.relaxedChallengeEndpoints });
  }

  /** The token audience of a vault: by its cloud, or Managed HSM for an endpoint configured as one. */
  resourceFor(vault: Endpoint): VaultResource {
    if (this.opts.managedHsmEndpoints?.includes(vault.host)) return MANAGED_HSM_RESOURCE;
    return resourceForVaultHost(vault);
  }

  prepare(vault: Endpoint, accessToken: string | undefined, signal?: AbortSignal): Promise<unknown> | undefined {
    if (accessToken) return undefined;
    const resource = this.resourceFor(vault);
    return this.vaults.forIdentity(vault, resource).fresh ? this.opts.tokens.getAccessToken(resource, signal) : undefined;
  }

  async release(req: VaultReleaseRequest, signal?: AbortSignal): Promise<string> {
    const { vault, name, version, maaToken } = req;
    const client = req.accessToken ? this.vaults.forCallerToken(vault, req.accessToken) : this.vaults.forIdentity(vault, this.resourceFor(vault)).client;
    try {
      const result = await client.releaseKey(name, maaToken, {
        ...(version ? { version } : {}),
        algorithm: req.enc as KeyExportEncryptionAlgorithm,
        ...(signal ? { abortSignal: signal } : {}),
      });
      return result.value;
    } catch (e) {
      if (e instanceof SkrError) throw e; // our identity layer failed inside the SDK pipeline
      throw await this.explainFailure(e as RestErrorLike, client, name, version, maaToken, vault, signal);
    }
  }

  /** Turn a failed release into a precise error, reading the key's policy when the identity may. */
  private async explainFailure(
    e: RestErrorLike,
    client: KeyClient,
    name: string,
    version: string | undefined,
    maaToken: string,
    url: Endpoint,
    signal?: AbortSignal,
  ): Promise<Error> {
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
