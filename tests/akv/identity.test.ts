import { workloadIdentityFromEnv } from '../../src/server/config';
import { randomUUID } from 'node:crypto';
import { ConfigError, InvalidInputError, UpstreamError } from '../../src/common/errors';
import {
  MANAGED_HSM_RESOURCE,
  resourceForVaultHost,
  rerouteImdsUrl,
  TokenProvider,
  VAULT_RESOURCE,
  type VaultResource,
} from '../../src/akv/identity';
import { startImdsEmulator, verifyAccessToken, type ImdsEmulator } from '../../src/emulators/imds';

const ENDPOINT_VARS = ['AZURE_POD_IDENTITY_AUTHORITY_HOST', 'IDENTITY_ENDPOINT', 'IDENTITY_HEADER', 'MSI_ENDPOINT', 'IMDS_ENDPOINT'];
const endpointEnv = () => ENDPOINT_VARS.map((k) => process.env[k]);

describe('resourceForVaultHost', () => {
  it.each<[string, VaultResource]>([
    ['myvault.vault.azure.net', VAULT_RESOURCE],
    ['myvault.vault.azure.net:443', VAULT_RESOURCE],
    ['MyVault.Vault.Azure.NET.', VAULT_RESOURCE],
    // Each cloud's vaults get that cloud's audience, never the public one.
    ['myvault.vault.azure.cn', 'https://vault.azure.cn'],
    ['myvault.vault.usgovcloudapi.net', 'https://vault.usgovcloudapi.net'],
    ['127.0.0.1:40123', VAULT_RESOURCE],
    ['localhost:8443', VAULT_RESOURCE],
    ['[::1]:8443', VAULT_RESOURCE],
    ['managedhsm.azure.net', VAULT_RESOURCE], // no HSM name label: not an HSM endpoint
    ['myhsm.managedhsm.azure.net.example.com', VAULT_RESOURCE], // the cloud suffix must end the name
    ['myhsm.managedhsm.example.com', VAULT_RESOURCE], // not an Azure cloud
    ['myhsm.managedhsm.azure.net', MANAGED_HSM_RESOURCE],
    ['MYHSM.MANAGEDHSM.AZURE.NET:443', MANAGED_HSM_RESOURCE],
    ['myhsm.managedhsm.azure.cn', 'https://managedhsm.azure.cn'],
    ['myhsm.managedhsm.usgovcloudapi.net', 'https://managedhsm.usgovcloudapi.net'],
    ['myhsm.managedhsm.microsoftazure.de', 'https://managedhsm.microsoftazure.de'],
    ['vault.azure.cn', VAULT_RESOURCE], // no vault name label
    ['https://myhsm.managedhsm.azure.net/', MANAGED_HSM_RESOURCE],
  ])('%s → %s', (host, resource) => {
    expect(resourceForVaultHost(host)).toBe(resource);
  });

  it.each(['', '   ', 'myvault.vault.azure.net/keys/k', 'host name with spaces', 'user@myvault.vault.azure.net'])(
    'refuses %j',
    (host) => {
      expect(() => resourceForVaultHost(host)).toThrow(InvalidInputError);
    },
  );
});

describe('rerouteImdsUrl', () => {
  it('rewrites only the IMDS origin, keeping path and query', () => {
    const url = 'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';
    expect(rerouteImdsUrl(url, 'http://127.0.0.1:5000')).toBe(
      'http://127.0.0.1:5000/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net',
    );
    expect(rerouteImdsUrl(url, undefined)).toBe(url);
    expect(rerouteImdsUrl('https://login.microsoftonline.com/t/oauth2/v2.0/token', 'http://127.0.0.1:5000')).toBe(
      'https://login.microsoftonline.com/t/oauth2/v2.0/token',
    );
    expect(rerouteImdsUrl('http://169.254.169.254:8080/metadata/x', 'http://127.0.0.1:5000')).toBe('http://169.254.169.254:8080/metadata/x');
  });
});

describe('TokenProvider', () => {
  const SYSTEM = { clientId: randomUUID(), objectId: randomUUID() };
  const USER = { clientId: randomUUID(), objectId: randomUUID() };
  let imds: ImdsEmulator;

  beforeAll(async () => {
    imds = await startImdsEmulator({ principals: [SYSTEM, USER] });
  });
  afterAll(() => imds.close());

  it('returns an override token as is, without asking any identity endpoint', async () => {
    // Port 9 (discard) on loopback: any attempt to fetch would fail, so success proves no call.
    const p = new TokenProvider({ imdsEndpoint: 'http://127.0.0.1:9' });
    await expect(p.getToken(VAULT_RESOURCE, 'eyJ.override .token')).resolves.toBe('eyJ.override .token');
    await expect(p.getToken(MANAGED_HSM_RESOURCE, 'x')).resolves.toBe('x');
  });

  it('gets a system-assigned managed identity token through @azure/identity from the IMDS emulator', async () => {
    const before = endpointEnv();
    const p = new TokenProvider({ imdsEndpoint: imds.url });
    expect(p.mode).toBe('managed-identity');
    const pending = p.getToken(VAULT_RESOURCE);
    // Nothing is published through the process environment while the request is in flight.
    expect(endpointEnv()).toEqual(before);
    const token = await pending;
    expect(endpointEnv()).toEqual(before);
    const claims = await verifyAccessToken(token, { publicKey: imds.publicKey, issuer: imds.issuer, audience: VAULT_RESOURCE });
    expect(claims.oid).toBe(SYSTEM.objectId);
    expect(claims.appid).toBe(SYSTEM.clientId);
  });

  it('gets a user-assigned token (client id) for Managed HSM', async () => {
    const p = new TokenProvider({ clientId: USER.clientId, imdsEndpoint: imds.url });
    const token = await p.getToken(MANAGED_HSM_RESOURCE);
    const claims = await verifyAccessToken(token, { jwks: imds.jwks, issuer: imds.issuer, audience: MANAGED_HSM_RESOURCE });
    expect(claims.oid).toBe(USER.objectId);
    expect(claims.appid).toBe(USER.clientId);
  });

  it('routes each provider to its own endpoint even though msal keeps one IMDS source per process', async () => {
    const otherPrincipal = { clientId: randomUUID(), objectId: randomUUID() };
    const other = await startImdsEmulator({ principals: [otherPrincipal] });
    try {
      const p = new TokenProvider({ clientId: otherPrincipal.clientId, imdsEndpoint: other.url });
      const token = await p.getToken(VAULT_RESOURCE);
      // Signed by the second emulator's key, which the first emulator does not have.
      const claims = await verifyAccessToken(token, { publicKey: other.publicKey, issuer: other.issuer, audience: VAULT_RESOURCE });
      expect(claims.oid).toBe(otherPrincipal.objectId);
      await expect(verifyAccessToken(token, { publicKey: imds.publicKey, issuer: other.issuer, audience: VAULT_RESOURCE })).rejects.toThrow(/access token rejected \(ERR_JWS_SIGNATURE_VERIFICATION_FAILED\)/);
    } finally {
      await other.close();
    }
  });

  it('fails with ERR_IDENTITY_TOKEN naming the IMDS error for an unknown user-assigned identity', async () => {
    const p = new TokenProvider({ clientId: randomUUID(), imdsEndpoint: imds.url });
    const err = await p.getToken(VAULT_RESOURCE).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).code).toBe('ERR_IDENTITY_TOKEN');
    expect((err as UpstreamError).status).toBe(502);
    expect((err as Error).message).toMatch(/Identity not found/);
  });

  it('refuses resources other than the vault and HSM audiences', async () => {
    const p = new TokenProvider({ imdsEndpoint: imds.url });
    await expect(p.getToken('https://management.azure.com' as VaultResource)).rejects.toThrow(InvalidInputError);
  });

  it.each(['ftp://127.0.0.1:1', 'http://127.0.0.1:1/metadata', 'not a url', 'http://u:p@127.0.0.1:1'])(
    'refuses imdsEndpoint %j',
    (imdsEndpoint) => {
      expect(() => new TokenProvider({ imdsEndpoint })).toThrow(ConfigError);
    },
  );

  it('chooses workload identity when AZURE_FEDERATED_TOKEN_FILE is set and needs tenant and client id', () => {
    const env = { AZURE_FEDERATED_TOKEN_FILE: '/var/run/secrets/azure/tokens/azure-identity-token' };
    expect(() => new TokenProvider({ workload: workloadIdentityFromEnv({ ...env, AZURE_CLIENT_ID: randomUUID() }) })).toThrow(/AZURE_TENANT_ID/);
    expect(() => new TokenProvider({ workload: workloadIdentityFromEnv({ ...env, AZURE_TENANT_ID: randomUUID() }) })).toThrow(/AZURE_CLIENT_ID/);
    const p = new TokenProvider({ workload: workloadIdentityFromEnv({ ...env, AZURE_TENANT_ID: randomUUID() }), clientId: randomUUID() });
    expect(p.mode).toBe('workload-identity');
  });
});
