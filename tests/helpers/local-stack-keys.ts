/**
 * A client of an in-process `skr local` stack: imports releasable keys into its vault / Managed HSM
 * emulators (through the stack's managed identity and CA) and asks its sidecar to release them.
 */
import type { KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import { providerCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor, type ImportKty } from '../../src/akv/import-key';
import { buildReleasePolicy } from '../../src/akv/policy';
import type { LocalStack } from '../../src/cli/local-stack';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { postJson } from './sidecar';

type Groups = { claim: string; equals: string }[][];

export interface LocalStackKeys {
  /** Imports a releasable key under a release policy (authority: the stack's MAA) of anyOf `groups`; answers "name/version". */
  importKey(name: string, kty: ImportKty, material: Buffer | KeyObject, endpoint: string, groups?: Groups): Promise<string>;
  /** POST /key/release on the stack's sidecar with the stack's MAA. */
  release(kid: string, akv: string): ReturnType<typeof postJson>;
  destroy(): void;
}

export function localStackKeys(stack: LocalStack, defaultGroups: Groups): LocalStackKeys {
  const ca = fs.readFileSync(stack.state.caCertPath, 'utf8');
  const fetch = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
  const credential = providerCredential(new TokenProvider({ imdsEndpoint: stack.state.imdsUrl, extraCaPem: [ca] }));
  return {
    async importKey(name, kty, material, endpoint, groups = defaultGroups) {
      const k = await importReleasableKey({
        vaultEndpoint: endpoint,
        name,
        jwk: sdkJwkFor(kty, material),
        policy: buildReleasePolicy({ authority: `https://${stack.state.maaEndpoint}`, anyOfGroups: groups }),
        credential,
        fetch,
        relaxedChallenge: true,
      });
      return `${name}/${k.version}`;
    },
    release: (kid, akv) => postJson(`${stack.sidecar.url}/key/release`, { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: akv, kid }),
    destroy: () => fetch.destroy(),
  };
}

/** The released JWK in a /key/release answer. */
export const jwkOf = (r: { json: Record<string, unknown> }): Record<string, string> => JSON.parse(String(r.json.key)) as Record<string, string>;
