/**
 * KeyClients for the release call. The SDK's Key Vault auth policy first sends a request without a
 * token to learn the vault's 401 challenge, then caches the challenge and the token inside the
 * client: a fresh client per release costs one extra round trip every time.
 *
 * - Managed / workload identity: one long-lived KeyClient per vault origin and audience, whose
 *   credential only ever yields the sidecar's own identity token for that audience. It is never
 *   given a caller's token, so nothing a caller sends can end up cached in it.
 * - A request's own `access_token`: a fresh client per request, dropped afterwards, so one caller's
 *   token can never serve another.
 */
import type { AccessToken, TokenCredential } from '@azure/core-auth';
import type { HttpClient } from '@azure/core-rest-pipeline';
import { KeyClient } from '@azure/keyvault-keys';
import type { Endpoint } from '../common/endpoint';
import type { FetchLike } from '../common/http';
import { staticTokenCredential } from './credentials';
import type { TokenProvider, VaultResource } from './identity';
import { createSdkHttpClient } from './sdk-http-client';

const DEFAULT_MAX_CLIENTS = 32;

export interface VaultClientsOptions {
  fetch: FetchLike;
  /** host:port endpoints whose 401 challenge names a resource on another domain (loopback emulators only). */
  relaxedChallengeEndpoints?: string[];
  /** Vault origins with a cached identity client at once (least recently used dropped first). */
  maxClients?: number;
}

/**
 * The identity's token for one fixed audience, whatever scope a challenge asks for: a vault can
 * never make the sidecar mint a token for anything else (the same rule as the per-request path).
 */
export function identityCredential(tokens: TokenProvider, resource: VaultResource): TokenCredential {
  return {
    getToken: (_scopes, options): Promise<AccessToken> =>
      tokens.getAccessToken(resource, (options?.abortSignal as AbortSignal | undefined) ?? undefined),
  };
}

export class VaultClients {
  private readonly httpClient: HttpClient;
  private readonly identityClients = new Map<string, KeyClient>();
  private readonly maxClients: number;

  constructor(private readonly tokens: TokenProvider, private readonly opts: VaultClientsOptions) {
    this.httpClient = createSdkHttpClient(opts.fetch, { upstream: 'vault' });
    this.maxClients = opts.maxClients ?? DEFAULT_MAX_CLIENTS;
  }

  private create(url: Endpoint, credential: TokenCredential): KeyClient {
    return new KeyClient(url.origin, credential, {
      httpClient: this.httpClient,
      serviceVersion: '7.4',
      disableChallengeResourceVerification: this.opts.relaxedChallengeEndpoints?.includes(url.host) ?? false,
      retryOptions: { maxRetries: 2, retryDelayInMs: 200, maxRetryDelayInMs: 2000 },
    });
  }

  /** The long-lived client authenticating as the sidecar's identity; `fresh` on its first use. */
  forIdentity(url: Endpoint, resource: VaultResource): { client: KeyClient; fresh: boolean } {
    const key = `${url.origin} ${resource}`;
    const known = this.identityClients.get(key);
    if (known) {
      // Map order doubles as recency for the bound below.
      this.identityClients.delete(key);
      this.identityClients.set(key, known);
      return { client: known, fresh: false };
    }
    const client = this.create(url, identityCredential(this.tokens, resource));
    this.identityClients.set(key, client);
    while (this.identityClients.size > this.maxClients) {
      this.identityClients.delete(this.identityClients.keys().next().value as string);
    }
    return { client, fresh: true };
  }

  /** A single-use client carrying a caller's own bearer token. */
  forCallerToken(url: Endpoint, token: string): KeyClient {
    return this.create(url, staticTokenCredential(token));
  }
}
