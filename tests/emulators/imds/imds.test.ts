import { generateKeyPairSync, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeProtectedHeader } from 'jose';
import { VerificationError } from '../../../src/common/errors';
import {
  IMDS_ERRORS,
  IMDS_IDENTITY_FILE,
  IMDS_SIGNING_KEY_FILE,
  startImdsEmulator,
  verifyAccessToken,
  type ImdsEmulator,
} from '../../../src/emulators/imds';

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const SYSTEM = { clientId: '11111111-1111-1111-1111-111111111111', objectId: 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa' };
const USER = { clientId: '22222222-2222-2222-2222-222222222222', objectId: 'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb' };
const FIXED_NOW = new Date('2030-01-02T03:04:05Z');
const FIXED_SECONDS = Math.floor(FIXED_NOW.getTime() / 1000);
const THIM = { vcekCert: '-----BEGIN CERTIFICATE-----\nVCEK\n-----END CERTIFICATE-----\n', tcbm: '0B00000000000000' };

async function get(emu: ImdsEmulator, pathAndQuery: string, headers: Record<string, string> = { Metadata: 'true' }) {
  const res = await fetch(`${emu.url}${pathAndQuery}`, { headers });
  return { status: res.status, type: res.headers.get('content-type'), body: (await res.json()) as Record<string, unknown> };
}

const tokenPath = (q: Record<string, string>) =>
  `/metadata/identity/oauth2/token?${new URLSearchParams({ 'api-version': '2018-02-01', ...q })}`;

describe('IMDS emulator', () => {
  let emu: ImdsEmulator;
  beforeAll(async () => {
    emu = await startImdsEmulator({ tenantId: TENANT, principals: [SYSTEM, USER], thim: () => THIM, now: () => FIXED_NOW });
  });
  afterAll(() => emu.close());

  it('listens on plain HTTP on loopback and names its issuer and default principal', () => {
    expect(emu.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(emu.issuer).toBe(`https://sts.windows.net/${TENANT}/`);
    expect(emu.defaultPrincipal).toEqual(SYSTEM);
    expect(emu.jwks.keys).toHaveLength(1);
    expect(emu.jwks.keys[0]).toMatchObject({ kty: 'RSA', alg: 'RS256', use: 'sig' });
  });

  it('requires the Metadata header on the token endpoint, with the IMDS error body', async () => {
    const r = await get(emu, tokenPath({ resource: 'https://vault.azure.net' }), {});
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ error: 'invalid_request', error_description: 'Required metadata header not specified' });
    // The header value is case-sensitive: IMDS wants lower-case "true".
    expect((await get(emu, tokenPath({ resource: 'https://vault.azure.net' }), { Metadata: 'TRUE' })).status).toBe(400);
  });

  it("answers @azure/identity's availability probe (no query, no header) quickly with 400", async () => {
    const r = await get(emu, '/metadata/identity/oauth2/token', { Accept: 'application/json' });
    expect(r.status).toBe(400);
    expect(r.body).toEqual(IMDS_ERRORS.metadataHeader);
  });

  it('refuses a request without resource or api-version', async () => {
    const noResource = await get(emu, tokenPath({}));
    expect(noResource.status).toBe(400);
    expect(noResource.body.error_description).toBe('Required audience parameter not specified');
    const noVersion = await get(emu, '/metadata/identity/oauth2/token?resource=https://vault.azure.net');
    expect(noVersion.status).toBe(400);
    expect(noVersion.body.error).toBe('invalid_request');
  });

  it('issues a system-assigned token with the IMDS response shape and Entra claims', async () => {
    const r = await get(emu, tokenPath({ resource: 'https://vault.azure.net' }));
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^application\/json/);
    expect(r.body).toEqual({
      access_token: expect.any(String),
      client_id: SYSTEM.clientId,
      expires_in: '3600',
      expires_on: String(FIXED_SECONDS + 3600),
      ext_expires_in: '3600',
      not_before: String(FIXED_SECONDS),
      resource: 'https://vault.azure.net',
      token_type: 'Bearer',
    });
    const token = r.body.access_token as string;
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'RS256', typ: 'JWT', kid: emu.jwks.keys[0].kid });
    const claims = await verifyAccessToken(token, {
      publicKey: emu.publicKey,
      issuer: emu.issuer,
      audience: 'https://vault.azure.net',
      now: new Date(FIXED_NOW.getTime() + 60_000),
    });
    expect(claims).toMatchObject({
      aud: 'https://vault.azure.net',
      iss: `https://sts.windows.net/${TENANT}/`,
      oid: SYSTEM.objectId,
      appid: SYSTEM.clientId,
      tid: TENANT,
      iat: FIXED_SECONDS,
      nbf: FIXED_SECONDS,
      exp: FIXED_SECONDS + 3600,
    });
  });

  it('selects a user-assigned identity by client_id or object_id (case-insensitive)', async () => {
    const byClient = await get(emu, tokenPath({ resource: 'https://managedhsm.azure.net', client_id: USER.clientId.toUpperCase() }));
    expect(byClient.status).toBe(200);
    expect(byClient.body.client_id).toBe(USER.clientId);
    const claims = await verifyAccessToken(byClient.body.access_token as string, {
      jwks: emu.jwks,
      issuer: emu.issuer,
      audience: 'https://managedhsm.azure.net',
      now: FIXED_NOW,
    });
    expect(claims.oid).toBe(USER.objectId);
    expect(claims.appid).toBe(USER.clientId);
    const byObject = await get(emu, tokenPath({ resource: 'https://vault.azure.net', object_id: USER.objectId }));
    expect(byObject.body.client_id).toBe(USER.clientId);
  });

  it('answers an unknown identity with 400 "Identity not found"', async () => {
    const r = await get(emu, tokenPath({ resource: 'https://vault.azure.net', client_id: randomUUID() }));
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ error: 'invalid_request', error_description: 'Identity not found' });
    const res = await get(emu, tokenPath({ resource: 'https://vault.azure.net', msi_res_id: '/subscriptions/x/y' }));
    expect(res.body).toEqual(IMDS_ERRORS.identityNotFound);
  });

  it('refuses two identity selectors at once', async () => {
    const r = await get(emu, tokenPath({ resource: 'https://vault.azure.net', client_id: USER.clientId, object_id: USER.objectId }));
    expect(r.status).toBe(400);
    expect(r.body.error).toBe('invalid_request');
  });

  it('serves the THIM certification JSON only with the Metadata header', async () => {
    const ok = await get(emu, '/metadata/THIM/amd/certification');
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual(THIM);
    const noHeader = await get(emu, '/metadata/THIM/amd/certification', {});
    expect(noHeader.status).toBe(400);
    expect(noHeader.body).toEqual({ error: 'Bad request. Required metadata header not specified' });
  });

  it('answers unknown paths with 404 and non-GET with 405', async () => {
    expect((await get(emu, '/metadata/instance?api-version=2021-02-01')).status).toBe(404);
    const post = await fetch(`${emu.url}/metadata/identity/oauth2/token`, { method: 'POST', headers: { Metadata: 'true' } });
    expect(post.status).toBe(405);
    await post.arrayBuffer();
  });
});

describe('IMDS emulator state and keys', () => {
  it('404s THIM when no THIM document is configured', async () => {
    const emu = await startImdsEmulator();
    try {
      expect((await get(emu, '/metadata/THIM/amd/certification')).status).toBe(404);
    } finally {
      await emu.close();
    }
  });

  it('signs with a given key, and verifyAccessToken rejects another key, issuer, audience or expiry', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const emu = await startImdsEmulator({ signingKey: privateKey, now: () => FIXED_NOW });
    try {
      const { body } = await get(emu, tokenPath({ resource: 'https://vault.azure.net' }));
      const token = body.access_token as string;
      const base = { issuer: emu.issuer, audience: 'https://vault.azure.net', now: FIXED_NOW };
      await expect(verifyAccessToken(token, { ...base, publicKey: emu.publicKey })).resolves.toMatchObject({ tid: emu.tenantId });
      const cases = [
        { ...base, publicKey: other.publicKey },
        { ...base, publicKey: emu.publicKey, issuer: 'https://sts.windows.net/other/' },
        { ...base, publicKey: emu.publicKey, audience: 'https://managedhsm.azure.net' },
        { ...base, publicKey: emu.publicKey, now: new Date(FIXED_NOW.getTime() + 3601_000) },
      ];
      for (const c of cases) {
        const err = await verifyAccessToken(token, c).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(VerificationError);
        expect((err as VerificationError).step).toBe('access-token');
      }
      await expect(verifyAccessToken('not-a-jwt', { ...base, publicKey: emu.publicKey })).rejects.toThrow(VerificationError);
    } finally {
      await emu.close();
    }
  });

  it('persists the signing key, tenant and identities in stateDir across restarts', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imds-state-'));
    try {
      const first = await startImdsEmulator({ stateDir: dir });
      const token = (await get(first, tokenPath({ resource: 'https://vault.azure.net' }))).body.access_token as string;
      await first.close();
      expect(fs.statSync(path.join(dir, IMDS_SIGNING_KEY_FILE)).mode & 0o777).toBe(0o600);
      expect(fs.existsSync(path.join(dir, IMDS_IDENTITY_FILE))).toBe(true);

      const second = await startImdsEmulator({ stateDir: dir });
      try {
        expect(second.issuer).toBe(first.issuer);
        expect(second.defaultPrincipal).toEqual(first.defaultPrincipal);
        expect(second.jwks).toEqual(first.jwks);
        // A token from the first run still verifies against the second run's key.
        const claims = await verifyAccessToken(token, { publicKey: second.publicKey, issuer: second.issuer, audience: 'https://vault.azure.net' });
        expect(claims.oid).toBe(second.defaultPrincipal.objectId);
      } finally {
        await second.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a non-RSA signing key and empty principals', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await expect(startImdsEmulator({ signingKey: ec.privateKey })).rejects.toThrow(/RSA/);
    await expect(startImdsEmulator({ tenantId: TENANT, principals: [] })).rejects.toThrow(/principals/);
  });
});
