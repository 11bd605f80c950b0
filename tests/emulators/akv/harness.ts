/**
 * Everything a vault-emulator test needs on loopback: a local CA, the IMDS emulator (access
 * tokens), an "attestation authority" that mints MAA-shaped tokens with jose and serves its
 * OpenID metadata + JWKS over HTTPS, and an Azure SDK TokenCredential backed by IMDS.
 */
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { AccessToken, TokenCredential } from '@azure/core-auth';
import { KeyClient } from '@azure/keyvault-keys';
import { exportJWK, SignJWT, type JWTPayload } from 'jose';
import { createLocalCa, type IssuedCertificate } from '../../../src/asn1/x509';
import { createHttpsFetch, type HttpsFetch } from '../../../src/common/https-fetch';
import { loopbackServerTls } from '../../../src/emulators/ca';
import { startImdsEmulator, type ImdsEmulator } from '../../../src/emulators/imds';
import { createSdkHttpClient } from '../../../src/akv/sdk-http-client';

export const HOST_DATA = 'a'.repeat(64);

export interface Authority {
  url: string;
  mint(claims: Record<string, unknown>, opts?: { expiresInSeconds?: number; notBeforeOffsetSeconds?: number }): Promise<string>;
  close(): Promise<void>;
}

/** A minimal MAA stand-in: RS256 tokens, /.well-known/openid-configuration and /certs. */
export async function startAuthority(ca: IssuedCertificate): Promise<Authority> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomUUID();
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  let origin = '';
  const server = https.createServer(loopbackServerTls(ca), (req, res) => {
    const body =
      req.url === '/.well-known/openid-configuration'
        ? { issuer: origin, jwks_uri: `${origin}/certs` }
        : req.url === '/certs'
          ? { keys: [jwk] }
          : undefined;
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body ?? { error: 'not found' }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: origin,
    async mint(claims, opts = {}) {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ ...claims } as JWTPayload)
        .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT', jku: `${origin}/certs` })
        .setIssuer(origin)
        .setIssuedAt(now)
        .setNotBefore(now + (opts.notBeforeOffsetSeconds ?? 0))
        .setExpirationTime(now + (opts.expiresInSeconds ?? 3600))
        .sign(privateKey as KeyObject);
    },
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

/** SEV-SNP claims as MAA issues them, with the wrapping key in x-ms-runtime. */
export function snpClaims(runtime: unknown, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    'x-ms-attestation-type': 'sevsnpvm',
    'x-ms-compliance-status': 'azure-compliant-uvm',
    'x-ms-sevsnpvm-hostdata': HOST_DATA,
    'x-ms-sevsnpvm-is-debuggable': false,
    'x-ms-sevsnpvm-vmpl': 0,
    'x-ms-runtime': runtime,
    ...overrides,
  };
}

/** A TokenCredential that asks the IMDS emulator, as ManagedIdentityCredential would ask IMDS. */
export function imdsCredential(imds: ImdsEmulator, clientId?: string): TokenCredential & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async getToken(scopes: string | string[]): Promise<AccessToken> {
      const scope = Array.isArray(scopes) ? scopes[0] : scopes;
      const resource = scope.replace(/\/\.default$/, '');
      calls.push(resource);
      return getImdsToken(imds, resource, clientId);
    },
  };
}

export async function getImdsToken(imds: ImdsEmulator, resource: string, clientId?: string): Promise<AccessToken & { token: string }> {
  const q = new URLSearchParams({ 'api-version': '2018-02-01', resource, ...(clientId ? { client_id: clientId } : {}) });
  const res = await fetch(`${imds.url}/metadata/identity/oauth2/token?${q}`, { headers: { Metadata: 'true' } });
  if (!res.ok) throw new Error(`IMDS answered ${res.status}: ${await res.text()}`);
  const body = (await res.json()) as { access_token: string; expires_on: string };
  return { token: body.access_token, expiresOnTimestamp: Number(body.expires_on) * 1000 };
}

export interface Harness {
  dir: string;
  ca: IssuedCertificate;
  imds: ImdsEmulator;
  authority: Authority;
  foreign: Authority;
  fetch: HttpsFetch;
  keyClient(vaultUrl: string, clientId?: string): KeyClient;
  close(): Promise<void>;
}

export async function startHarness(): Promise<Harness> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'akv-emu-'));
  const ca = createLocalCa();
  const imds = await startImdsEmulator({
    stateDir: path.join(dir, 'imds'),
    principals: [
      { clientId: randomUUID(), objectId: randomUUID() },
      { clientId: randomUUID(), objectId: randomUUID() },
    ],
  });
  const authority = await startAuthority(ca);
  const foreign = await startAuthority(ca);
  const fetch = createHttpsFetch({ extraCaPem: [ca.certPem] });
  const sdkFetch = createHttpsFetch({ extraCaPem: [ca.certPem] });
  return {
    dir,
    ca,
    imds,
    authority,
    foreign,
    fetch,
    keyClient: (vaultUrl, clientId) =>
      new KeyClient(vaultUrl, imdsCredential(imds, clientId), {
        disableChallengeResourceVerification: true,
        httpClient: createSdkHttpClient(sdkFetch),
        retryOptions: { maxRetries: 0 },
      }),
    async close() {
      fetch.destroy();
      sdkFetch.destroy();
      await Promise.all([imds.close(), authority.close(), foreign.close()]);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
