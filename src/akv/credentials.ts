/** Azure SDK TokenCredentials over our identity layer, limited to the two vault audiences. */
import type { TokenCredential } from '@azure/core-auth';
import { InvalidInputError } from '../common/errors';
import { isVaultResource, type TokenProvider } from './identity';

/** A fixed bearer token (the request's `access_token`, or importkey's `bearer_token`). */
export function staticTokenCredential(token: string): TokenCredential {
  return { getToken: async () => ({ token, expiresOnTimestamp: Date.now() + 5 * 60_000 }) };
}

/**
 * Tokens from the identity layer for the scope a vault's 401 challenge names. Only the Key Vault
 * and Managed HSM audiences (of every Azure cloud) are served: a vault can never make the sidecar mint a token for anything else.
 */
export function providerCredential(tokens: TokenProvider): TokenCredential {
  return {
    async getToken(scopes, options) {
      const scope = (Array.isArray(scopes) ? scopes[0] : scopes) ?? '';
      const resource = scope.replace(/\/\.default$/, '').replace(/\/+$/, '');
      if (!isVaultResource(resource)) {
        throw new InvalidInputError('ERR_TOKEN_SCOPE', `refusing to obtain a token for scope "${scope}": only Key Vault and Managed HSM`);
      }
      const token = await tokens.getToken(resource, undefined, options?.abortSignal as AbortSignal | undefined);
      return { token, expiresOnTimestamp: Date.now() + 5 * 60_000 };
    },
  };
}
