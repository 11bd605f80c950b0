import { workloadIdentityFromEnv } from '../../src/server/config';
/**
 * Workload identity through the real @azure/identity WorkloadIdentityCredential against a small
 * fake Entra ID authority on loopback. @azure/identity insists on an https:// authority host, so the
 * fake serves TLS from a local CA that the provider trusts through `extraCaPem` (no
 * NODE_EXTRA_CA_CERTS, no process-wide TLS change).
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createLocalCa } from '../../src/asn1/x509';
import { UpstreamError } from '../../src/common/errors';
import { loopbackServerTls } from '../../src/emulators/ca';
import { MANAGED_HSM_RESOURCE, TokenProvider, VAULT_RESOURCE } from '../../src/akv/identity';

interface TokenRequest {
  path: string;
  form: Record<string, string>;
}

async function startFakeAuthority(tenantId: string) {
  const ca = createLocalCa();
  const requests: TokenRequest[] = [];
  const paths: string[] = [];
  let base = '';
  const server = https.createServer(loopbackServerTls(ca), (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', base);
      paths.push(`${req.method} ${url.pathname}`);
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method === 'GET' && url.pathname === `/${tenantId}/v2.0/.well-known/openid-configuration`) {
        return json(200, {
          issuer: `${base}/${tenantId}/v2.0`,
          authorization_endpoint: `${base}/${tenantId}/oauth2/v2.0/authorize`,
          token_endpoint: `${base}/${tenantId}/oauth2/v2.0/token`,
          end_session_endpoint: `${base}/${tenantId}/oauth2/v2.0/logout`,
          jwks_uri: `${base}/${tenantId}/discovery/v2.0/keys`,
          response_types_supported: ['code', 'token'],
        });
      }
      if (req.method === 'POST' && url.pathname === `/${tenantId}/oauth2/v2.0/token`) {
        const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
        requests.push({ path: url.pathname, form });
        return json(200, {
          token_type: 'Bearer',
          expires_in: 3600,
          ext_expires_in: 3600,
          access_token: `wi-token-for-${form.scope}`,
        });
      }
      json(404, { error: 'not_found' });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `https://localhost:${(server.address() as AddressInfo).port}`;
  return {
    base,
    caPem: ca.certPem,
    requests,
    paths,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

describe('TokenProvider: workload identity', () => {
  const tenantId = randomUUID();
  const clientId = randomUUID();
  const assertion = `eyJhbGciOiJSUzI1NiJ9.${randomUUID()}.sig`;
  let dir: string;
  let tokenFile: string;
  let authority: Awaited<ReturnType<typeof startFakeAuthority>>;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wi-'));
    tokenFile = path.join(dir, 'azure-identity-token');
    fs.writeFileSync(tokenFile, `${assertion}\n`);
    authority = await startFakeAuthority(tenantId);
  });
  afterAll(async () => {
    await authority.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const env = () => ({
    AZURE_FEDERATED_TOKEN_FILE: tokenFile,
    AZURE_CLIENT_ID: clientId,
    AZURE_TENANT_ID: tenantId,
    AZURE_AUTHORITY_HOST: authority.base,
  });

  it('exchanges the federated token for an access token at AZURE_AUTHORITY_HOST', async () => {
    const before = { ...process.env };
    const p = new TokenProvider({ workload: workloadIdentityFromEnv(env()), extraCaPem: [authority.caPem] });
    expect(p.mode).toBe('workload-identity');
    await expect(p.getToken(MANAGED_HSM_RESOURCE)).resolves.toBe('wi-token-for-https://managedhsm.azure.net/.default');
    expect(authority.requests).toHaveLength(1);
    expect(authority.requests[0].form).toMatchObject({
      grant_type: 'client_credentials',
      client_id: clientId,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
      scope: 'https://managedhsm.azure.net/.default',
    });
    // Instance discovery is off: only our authority was asked, and nothing went into process.env.
    expect(authority.paths.every((p) => p.includes(`/${tenantId}/`))).toBe(true);
    expect(process.env).toEqual(before);
  });

  it('caches the token per scope inside @azure/identity', async () => {
    const p = new TokenProvider({ workload: workloadIdentityFromEnv(env()), extraCaPem: [authority.caPem] });
    const n = authority.requests.length;
    await expect(p.getToken(VAULT_RESOURCE)).resolves.toBe('wi-token-for-https://vault.azure.net/.default');
    await expect(p.getToken(VAULT_RESOURCE)).resolves.toBe('wi-token-for-https://vault.azure.net/.default');
    expect(authority.requests.length).toBe(n + 1);
  });

  it('prefers an explicit client id over AZURE_CLIENT_ID, as @azure/identity does', async () => {
    const explicit = randomUUID();
    const p = new TokenProvider({ workload: workloadIdentityFromEnv(env()), clientId: explicit, extraCaPem: [authority.caPem] });
    await p.getToken(VAULT_RESOURCE);
    expect(authority.requests[authority.requests.length - 1].form.client_id).toBe(explicit);
  });

  it('does not trust the authority without its CA', async () => {
    const p = new TokenProvider({ workload: workloadIdentityFromEnv({ ...env(), AZURE_CLIENT_ID: randomUUID() }) });
    const seen = authority.paths.length;
    const err = await p.getToken(VAULT_RESOURCE).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).code).toBe('ERR_IDENTITY_TOKEN');
    // The TLS handshake failed: not even the metadata request reached the authority.
    expect(authority.paths.length).toBe(seen);
  });

  it('still returns an override token without reading the federated token', async () => {
    const p = new TokenProvider({ workload: workloadIdentityFromEnv({ ...env(), AZURE_FEDERATED_TOKEN_FILE: path.join(dir, 'missing') }) });
    await expect(p.getToken(VAULT_RESOURCE, 'override')).resolves.toBe('override');
  });
});
