/**
 * Bearer tokens for Key Vault / Managed HSM. Three sources, in this order:
 *   1. the request's own `access_token` (returned as is, nothing else consulted);
 *   2. workload identity (AKS) when AZURE_FEDERATED_TOKEN_FILE is set: @azure/identity's
 *      WorkloadIdentityCredential with AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_AUTHORITY_HOST
 *      (read by the server config, passed in as `workload`);
 *   3. otherwise managed identity through @azure/identity's ManagedIdentityCredential
 *      (system-assigned, or user-assigned by `SkrSideCarArgs.identity.client_id`).
 * Tokens are cached by @azure/identity / msal-node and never logged here.
 *
 * Reaching an IMDS emulator (`imdsEndpoint`), and why not through environment variables:
 * in @azure/identity 4.13.1 (msal-node 5.6) the IMDS URL comes from AZURE_POD_IDENTITY_AUTHORITY_HOST
 * (http:// allowed; IDENTITY_ENDPOINT/MSI_ENDPOINT select the App Service, Arc, Cloud Shell, ML or
 * Service Fabric sources instead, which speak other protocols). msal reads it when the *first*
 * token request of the process selects its managed identity source and keeps that source — URL and
 * the first credential's network client — in a static for the life of the process. Setting the
 * variable around a call would therefore leak it to the whole process during the await and still
 * pin every later credential to the first endpoint. Instead every ManagedIdentityCredential made
 * here gets one shared HTTP client that, per call, rewrites `http://169.254.169.254/metadata/...`
 * to the endpoint of the TokenProvider making the call (carried in an AsyncLocalStorage around
 * getToken). process.env is never written. The availability probe (only when `sendProbeRequest`,
 * off for a directly constructed credential) would go through the same client.
 * Consequences: all managed-identity tokens in the process must come through TokenProvider (a
 * ManagedIdentityCredential created elsewhere first would own msal's static source), and msal's
 * managed-identity token cache is process-wide, keyed by (identity, resource) — not by endpoint.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { ManagedIdentityCredential, WorkloadIdentityCredential, type AccessToken, type TokenCredential } from '@azure/identity';
import type { HttpClient } from '@azure/core-rest-pipeline';
import { toEndpoint, type Endpoint } from '../common/endpoint';
import { ConfigError, InvalidInputError, UpstreamError } from '../common/errors';
import type { FetchLike } from '../common/http';
import { clip } from '../common/clip';
import { createHttpsFetch } from '../common/https-fetch';
import { registerSecret } from '../common/redact';
import { createSdkHttpClient } from './sdk-http-client';
import { NO_TELEMETRY, type Telemetry } from '../common/telemetry';

export const VAULT_RESOURCE = 'https://vault.azure.net';
export const MANAGED_HSM_RESOURCE = 'https://managedhsm.azure.net';
/**
 * Key Vault and Managed HSM audiences per Azure cloud. A vault in one cloud must never receive a
 * token minted for another cloud's audience, so each DNS suffix maps to its own cloud's resource.
 */
export const VAULT_RESOURCES = {
  'vault.azure.net': 'https://vault.azure.net',
  'vault.azure.cn': 'https://vault.azure.cn',
  'vault.usgovcloudapi.net': 'https://vault.usgovcloudapi.net',
  'vault.microsoftazure.de': 'https://vault.microsoftazure.de',
  'managedhsm.azure.net': 'https://managedhsm.azure.net',
  'managedhsm.azure.cn': 'https://managedhsm.azure.cn',
  'managedhsm.usgovcloudapi.net': 'https://managedhsm.usgovcloudapi.net',
  'managedhsm.microsoftazure.de': 'https://managedhsm.microsoftazure.de',
} as const;
export type VaultResource = (typeof VAULT_RESOURCES)[keyof typeof VAULT_RESOURCES];
const ALL_VAULT_RESOURCES: ReadonlySet<string> = new Set(Object.values(VAULT_RESOURCES));

/** The real IMDS origin that msal-node's IMDS source always calls. */
export const IMDS_ORIGIN = 'http://169.254.169.254';

/** Azure cloud DNS suffixes under which `<name>.managedhsm.<suffix>` is a Managed HSM pool. */
export const MANAGED_HSM_CLOUD_SUFFIXES: readonly string[] = ['azure.net', 'azure.cn', 'usgovcloudapi.net', 'microsoftazure.de'];

/**
 * Token audience for a vault endpoint, by the cloud its DNS suffix belongs to (`<name>.vault.azure.cn`
 * → `https://vault.azure.cn`, `<name>.managedhsm.usgovcloudapi.net` → `https://managedhsm.usgovcloudapi.net`).
 * Any other host (custom allowlisted names, loopback emulators) gets the public Key Vault audience.
 */
export function resourceForVaultHost(host: Endpoint | string): VaultResource {
  const ep = toEndpoint('akv', host);
  if ((ep.service === 'vault' || ep.service === 'managedhsm') && ep.suffix) return VAULT_RESOURCES[ep.suffix as keyof typeof VAULT_RESOURCES];
  return VAULT_RESOURCE;
}

export function isVaultResource(r: unknown): r is VaultResource {
  return typeof r === 'string' && ALL_VAULT_RESOURCES.has(r);
}

// --- IMDS routing -------------------------------------------------------------------------------

const imdsRoute = new AsyncLocalStorage<string | undefined>();
let sharedImdsClient: HttpClient | undefined;

/** `url` with the IMDS origin replaced by `endpointOrigin` (other URLs, or no endpoint: unchanged). */
export function rerouteImdsUrl(url: string, endpointOrigin: string | undefined): string {
  if (!endpointOrigin) return url;
  const u = new URL(url);
  if (u.origin !== IMDS_ORIGIN || !u.pathname.startsWith('/metadata/')) return url;
  return `${endpointOrigin}${u.pathname}${u.search}`;
}

/** The one HTTP client every managed identity credential here uses (see the header comment). */
function imdsHttpClient(): HttpClient {
  if (!sharedImdsClient) {
    // No keep-alive: tokens are fetched about once an hour, and idle sockets would pin the process.
    const inner = createHttpsFetch({ keepAlive: false });
    const routed: FetchLike = (input, init) => inner(rerouteImdsUrl(String(input), imdsRoute.getStore()), init);
    sharedImdsClient = createSdkHttpClient(routed, { upstream: 'identity' });
  }
  return sharedImdsClient;
}

/** Origin of an IMDS endpoint given as `http://host:port` (no path, query or credentials). */
function imdsOrigin(endpoint: string): string {
  let u: URL;
  try {
    u = new URL(endpoint);
  } catch {
    throw new ConfigError(`imdsEndpoint ${JSON.stringify(endpoint)} is not a URL`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.pathname !== '/' || u.search || u.hash || u.username || u.password) {
    throw new ConfigError(`imdsEndpoint must be http(s)://host[:port] without a path, got ${JSON.stringify(endpoint)}`);
  }
  return u.origin;
}

// --- TokenProvider ------------------------------------------------------------------------------

export type IdentityMode = 'managed-identity' | 'workload-identity';

/** AKS workload identity, as the server config reads it from AZURE_FEDERATED_TOKEN_FILE and friends. */
export interface WorkloadIdentitySettings {
  tokenFilePath: string;
  /** AZURE_CLIENT_ID (an explicit `clientId` option wins). */
  clientId?: string;
  /** AZURE_TENANT_ID. */
  tenantId?: string;
  /** AZURE_AUTHORITY_HOST. */
  authorityHost?: string;
}

export interface TokenProviderOptions {
  /** User-assigned managed identity client id (`SkrSideCarArgs.identity.client_id`); empty: system-assigned. */
  clientId?: string;
  /** Workload identity settings (see config.ts); absent: managed identity. */
  workload?: WorkloadIdentitySettings;
  /** IMDS base URL, e.g. the emulator's `http://127.0.0.1:<port>` (default: the real 169.254.169.254). */
  imdsEndpoint?: string;
  /** Extra CAs trusted for the workload identity authority (a private or local test authority). */
  extraCaPem?: string[];
  /** Each token fetch is the `identity` stage and counts in the identity's health. */
  telemetry?: Telemetry;
}

export class TokenProvider {
  readonly mode: IdentityMode;
  private readonly credential: TokenCredential;
  private readonly imdsOrigin?: string;
  private readonly telemetry: Telemetry;

  constructor(opts: TokenProviderOptions = {}) {
    this.telemetry = opts.telemetry ?? NO_TELEMETRY;
    const clientId = opts.clientId?.trim() || undefined;
    try {
      if (opts.workload) {
        this.mode = 'workload-identity';
        this.credential = TokenProvider.workloadCredential(opts.workload, clientId, opts.extraCaPem);
      } else {
        this.mode = 'managed-identity';
        if (opts.imdsEndpoint) this.imdsOrigin = imdsOrigin(opts.imdsEndpoint);
        this.credential = new ManagedIdentityCredential({
          ...(clientId ? { clientId } : {}),
          httpClient: imdsHttpClient(),
        });
      }
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError(`identity: ${(err as Error).message}`, err);
    }
  }

  private static workloadCredential(w: WorkloadIdentitySettings, clientId: string | undefined, extraCaPem?: string[]): TokenCredential {
    // Same precedence as @azure/identity's own AKS path: an explicit client id, then AZURE_CLIENT_ID.
    const id = clientId ?? (w.clientId || undefined);
    if (!id) throw new ConfigError('workload identity: AZURE_FEDERATED_TOKEN_FILE is set but no client id (AZURE_CLIENT_ID)');
    if (!w.tenantId) throw new ConfigError('workload identity: AZURE_FEDERATED_TOKEN_FILE is set but AZURE_TENANT_ID is not');
    return new WorkloadIdentityCredential({
      clientId: id,
      tenantId: w.tenantId,
      tokenFilePath: w.tokenFilePath,
      ...(w.authorityHost ? { authorityHost: w.authorityHost } : {}),
      // As @azure/identity does for AKS: trust the configured authority instead of asking
      // login.microsoftonline.com for instance metadata first.
      disableInstanceDiscovery: true,
      httpClient: createSdkHttpClient(createHttpsFetch({ keepAlive: false, extraCaPem }), { upstream: 'identity' }),
    });
  }

  /**
   * A bearer token for `resource`. A non-empty `override` (the request's `access_token`) is returned
   * unchanged without touching any identity. Failures: UpstreamError 'ERR_IDENTITY_TOKEN' (502).
   */
  async getToken(resource: VaultResource, override?: string, signal?: AbortSignal): Promise<string> {
    if (typeof override === 'string' && override.length > 0) return override;
    return (await this.getAccessToken(resource, signal)).token;
  }

  /**
   * The identity's token for `resource` with its expiry, for SDK clients that cache it until near
   * expiry. @azure/identity (msal-node) caches it too and calls IMDS / the authority again only as
   * it nears expiry, so repeated calls cost no round trip.
   */
  async getAccessToken(resource: VaultResource, signal?: AbortSignal): Promise<AccessToken> {
    try {
      const t = await this.telemetry.stage('identity', () => this.fetchAccessToken(resource, signal));
      this.telemetry.outcome('identity');
      return t;
    } catch (e) {
      this.telemetry.outcome('identity', e instanceof Error ? e.message : 'error');
      throw e;
    }
  }

  private async fetchAccessToken(resource: VaultResource, signal?: AbortSignal): Promise<AccessToken> {
    if (!isVaultResource(resource)) {
      throw new InvalidInputError('ERR_TOKEN_RESOURCE', `token resource must be ${VAULT_RESOURCE} or ${MANAGED_HSM_RESOURCE}`);
    }
    const scope = `${resource}/.default`;
    try {
      const token = await imdsRoute.run(this.imdsOrigin, () =>
        this.credential.getToken(scope, signal ? { abortSignal: signal } : {}),
      );
      if (!token?.token) throw new Error('no token in the response');
      registerSecret(token.token);
      return token;
    } catch (err) {
      throw new UpstreamError(this.mode, `could not get a ${this.mode} token for ${resource}: ${clip(String((err as Error)?.message))}`, {
        code: 'ERR_IDENTITY_TOKEN',
        cause: err,
      });
    }
  }
}
