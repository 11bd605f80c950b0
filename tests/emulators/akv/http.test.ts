/**
 * The emulator over raw HTTPS: challenge, api-version gate, error shapes, release permissions and
 * every release refusal (not exportable, policy mismatch, foreign authority, expired token).
 */
import { generateKeyPairSync } from 'node:crypto';
import * as path from 'node:path';
import { buildReleasePolicy, encodeReleasePolicy } from '../../../src/akv/policy';
import { verifyReleaseJws } from '../../../src/akv/jws';
import { createWrappingKey } from '../../../src/akv/wrapping-key';
import { SUPPORTED_API_VERSIONS, startVaultEmulator, type VaultEmulator } from '../../../src/emulators/akv';
import { getImdsToken, HOST_DATA, snpClaims, startHarness, type Harness } from './harness';

let h: Harness;
let vault: VaultEmulator;
let hsm: VaultEmulator;
let token: string;
let hsmToken: string;
let otherToken: string;
const API = 'api-version=7.4';

const policy = () =>
  encodeReleasePolicy(
    buildReleasePolicy({ authority: h.authority.url, anyOfGroups: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: HOST_DATA }]] }),
  );

async function call(url: string, init: { method?: string; body?: unknown; token?: string | null } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const t = init.token === undefined ? token : init.token;
  if (t) headers.authorization = `Bearer ${t}`;
  const res = await h.fetch(url, {
    method: init.method ?? 'GET',
    headers,
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
  });
  const text = await res.text();
  // Loosely typed on purpose: the tests probe the service's JSON shapes field by field.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, any>) : undefined };
}

beforeAll(async () => {
  h = await startHarness();
  const [principal, other] = h.imds.principals;
  const common = { ca: h.ca, accessTokens: { publicKey: h.imds.publicKey, issuer: h.imds.issuer }, authorityFetch: h.fetch };
  vault = await startVaultEmulator({ ...common, flavour: 'vault', stateDir: path.join(h.dir, 'vault'), releasePrincipals: [principal.objectId] });
  hsm = await startVaultEmulator({ ...common, flavour: 'hsm', stateDir: path.join(h.dir, 'hsm') });
  token = (await getImdsToken(h.imds, 'https://vault.azure.net', principal.clientId)).token;
  otherToken = (await getImdsToken(h.imds, 'https://vault.azure.net/', other.clientId)).token;
  hsmToken = (await getImdsToken(h.imds, 'https://managedhsm.azure.net', principal.clientId)).token;
  const created = await call(`${vault.url}/keys/exportable/create?${API}`, {
    method: 'POST',
    body: { kty: 'RSA-HSM', key_size: 2048, attributes: { exportable: true }, release_policy: policy() },
  });
  expect(created.status).toBe(200);
  const plain = await call(`${vault.url}/keys/plain/create?${API}`, { method: 'POST', body: { kty: 'RSA', key_size: 2048 } });
  expect(plain.status).toBe(200);
});

afterAll(async () => {
  await vault?.close();
  await hsm?.close();
  await h?.close();
});

async function release(name: string, target: string, opts: { token?: string; enc?: string } = {}) {
  return call(`${vault.url}/keys/${name}/release?${API}`, {
    method: 'POST',
    token: opts.token ?? token,
    body: { target, ...(opts.enc ? { enc: opts.enc } : {}) },
  });
}

describe('authentication', () => {
  test('no bearer → 401 with the service challenge (vault and managed HSM resources)', async () => {
    const tenant = h.imds.tenantId;
    const r = await call(`${vault.url}/keys/exportable?${API}`, { token: null });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe(
      `Bearer authorization="https://login.microsoftonline.com/${tenant}", resource="https://vault.azure.net"`,
    );
    expect(r.body).toEqual({ error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' } });
    const m = await call(`${hsm.url}/keys/x?${API}`, { token: null });
    expect(m.status).toBe(401);
    expect(m.headers.get('www-authenticate')).toBe(
      `Bearer authorization="https://login.microsoftonline.com/${tenant}", resource="https://managedhsm.azure.net"`,
    );
  });

  test('a token for another audience, or tampered, → 401; trailing-slash audience is accepted', async () => {
    const wrongAud = await call(`${hsm.url}/keys/x?${API}`);
    expect(wrongAud.status).toBe(401);
    expect(wrongAud.body?.error.code).toBe('Unauthorized');
    const [h0, p0] = token.split('.');
    const tampered = await call(`${vault.url}/keys/exportable?${API}`, { token: `${h0}.${p0}.AAAA` });
    expect(tampered.status).toBe(401);
    const slash = await call(`${vault.url}/keys/exportable?${API}`, { token: otherToken });
    expect(slash.status).toBe(200);
  });
});

describe('api-version and error shapes', () => {
  test.each(SUPPORTED_API_VERSIONS)('api-version %s is accepted', async (v) => {
    expect((await call(`${vault.url}/keys/exportable?api-version=${v}`)).status).toBe(200);
  });

  test.each(['7.2', '2016-10-01', '7.4-preview', ''])('api-version "%s" → 400 BadParameter', async (v) => {
    const r = await call(`${vault.url}/keys/exportable?api-version=${v}`);
    expect(r.status).toBe(400);
    expect(r.body?.error.code).toBe('BadParameter');
    expect(typeof r.body?.error.message).toBe('string');
  });

  test('unknown key and unknown version → 404 KeyNotFound', async () => {
    const r = await call(`${vault.url}/keys/nope?${API}`);
    expect(r.status).toBe(404);
    expect(r.body?.error.code).toBe('KeyNotFound');
    expect(r.body?.error.message).toMatch(/^A key with \(name\/id\) nope was not found in this key vault\./);
    const v = await call(`${vault.url}/keys/exportable/${'0'.repeat(32)}?${API}`);
    expect(v.status).toBe(404);
    expect(v.body?.error.code).toBe('KeyNotFound');
  });

  test('answers never carry private material and key ids are host:port/keys/name/32-hex', async () => {
    const r = await call(`${vault.url}/keys/plain?${API}`);
    expect(r.body?.key.kid).toMatch(new RegExp(`^https://${vault.endpoint.replace(/\./g, '\\.')}/keys/plain/[0-9a-f]{32}$`));
    for (const p of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) expect(r.body?.key[p]).toBeUndefined();
    const o = await call(`${vault.url}/keys/exportable?${API}`);
    expect(o.body?.key.d).toBeUndefined();
    expect(o.body?.key.kty).toBe('RSA-HSM');
  });

  test('PUT import and GET versions over raw HTTP (Managed HSM)', async () => {
    const k = Buffer.alloc(16, 7).toString('base64url');
    const hsmCall = (init: Parameters<typeof call>[1] & { method: string }) => call(`${hsm.url}/keys/raw-import?${API}`, { token: hsmToken, ...init });
    const first = await hsmCall({ method: 'PUT', body: { key: { kty: 'oct-HSM', k }, tags: { t: '1' } } });
    expect(first.status).toBe(200);
    expect(first.body?.key).toEqual({ kid: expect.any(String), kty: 'oct-HSM', key_ops: ['encrypt', 'decrypt', 'wrapKey', 'unwrapKey'] });
    expect(first.body?.tags).toEqual({ t: '1' });
    expect(first.body?.attributes).toMatchObject({ enabled: true, exportable: false, recoveryLevel: 'Recoverable+Purgeable' });
    const second = await hsmCall({ method: 'PUT', body: { key: { kty: 'oct', k }, Hsm: true } });
    expect(second.body?.key.kty).toBe('oct-HSM');
    const list = await call(`${hsm.url}/keys/raw-import/versions?${API}`, { token: hsmToken });
    expect(list.status).toBe(200);
    expect(list.body?.nextLink).toBeNull();
    expect(list.body?.value.map((v: { kid: string }) => v.kid)).toEqual([second.body?.key.kid, first.body?.key.kid]);
    const badLength = await hsmCall({ method: 'PUT', body: { key: { kty: 'oct-HSM', k: 'AAAA' } } });
    expect(badLength.status).toBe(400);
    expect(badLength.body?.error.code).toBe('BadParameter');
  });

  test('key types by resource: oct-HSM only in Managed HSM; a vault refuses it with KeyTypeNotSupported', async () => {
    const k = Buffer.alloc(32, 9).toString('base64url');
    const notSupported = (kty: string) => ({ code: 'BadParameter', message: `Invalid kty value: ${kty}`, innererror: { code: 'KeyTypeNotSupported' } });
    const attempts = [
      await call(`${vault.url}/keys/sym/create?${API}`, { method: 'POST', body: { kty: 'oct-HSM', key_size: 256, attributes: { exportable: true }, release_policy: policy() } }),
      await call(`${vault.url}/keys/sym?${API}`, { method: 'PUT', body: { key: { kty: 'oct-HSM', k }, attributes: { exportable: true }, release_policy: policy() } }),
      await call(`${vault.url}/keys/sym?${API}`, { method: 'PUT', body: { key: { kty: 'oct', k }, Hsm: true } }),
    ];
    for (const r of attempts) {
      expect(r.status).toBe(400);
      expect(r.body?.error).toEqual(notSupported('oct-HSM'));
    }
    expect((await call(`${vault.url}/keys/sym?${API}`)).status).toBe(404);
    // Software oct keys exist nowhere.
    for (const url of [vault.url, hsm.url]) {
      const r = await call(`${url}/keys/sym/create?${API}`, { method: 'POST', token: url === hsm.url ? hsmToken : token, body: { kty: 'oct', key_size: 256 } });
      expect(r.body?.error).toEqual(notSupported('oct'));
    }
    const soft = await call(`${vault.url}/keys/sym?${API}`, { method: 'PUT', body: { key: { kty: 'oct', k } } });
    expect(soft.body?.error).toEqual(notSupported('oct'));
    // The same material is welcome in Managed HSM.
    const inHsm = await call(`${hsm.url}/keys/sym?${API}`, { method: 'PUT', token: hsmToken, body: { key: { kty: 'oct-HSM', k }, attributes: { exportable: true }, release_policy: policy() } });
    expect(inHsm.status).toBe(200);
    expect(inHsm.body?.key.kty).toBe('oct-HSM');
  });

  test('only HSM-protected keys can be exportable', async () => {
    for (const body of [
      { kty: 'RSA', key_size: 2048, attributes: { exportable: true }, release_policy: policy() },
      { kty: 'EC', crv: 'P-256', attributes: { exportable: true }, release_policy: policy() },
    ]) {
      const r = await call(`${vault.url}/keys/soft-export/create?${API}`, { method: 'POST', body });
      expect(r.status).toBe(400);
      expect(r.body?.error.message).toMatch(/Only HSM-protected keys can be exportable: '(RSA|EC)' is a software key/);
    }
    expect((await call(`${vault.url}/keys/soft-export?${API}`)).status).toBe(404);
    const ec = await call(`${vault.url}/keys/hsm-export/create?${API}`, { method: 'POST', body: { kty: 'EC-HSM', crv: 'P-256', attributes: { exportable: true }, release_policy: policy() } });
    expect(ec.status).toBe(200);
    expect(ec.body?.attributes.exportable).toBe(true);
  });

  test('EC keys on P-256K (secp256k1), as both resources hold them: created, and imported with their own x/y', async () => {
    const created = await call(`${vault.url}/keys/k256/create?${API}`, { method: 'POST', body: { kty: 'EC-HSM', crv: 'P-256K', attributes: { exportable: true }, release_policy: policy() } });
    expect(created.status).toBe(200);
    expect(created.body?.key).toMatchObject({ kty: 'EC-HSM', crv: 'P-256K' });
    const jwk = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey.export({ format: 'jwk' });
    const imported = await call(`${hsm.url}/keys/k256?${API}`, { method: 'PUT', token: hsmToken, body: { key: { ...jwk, kty: 'EC-HSM', crv: 'P-256K' } } });
    expect(imported.status).toBe(200);
    expect(imported.body?.key).toMatchObject({ kty: 'EC-HSM', crv: 'P-256K', x: jwk.x, y: jwk.y });
    expect(imported.body?.key.d).toBeUndefined();
    const badCurve = await call(`${vault.url}/keys/k256/create?${API}`, { method: 'POST', body: { kty: 'EC-HSM', crv: 'P-192' } });
    expect(badCurve.body?.error.message).toBe("Invalid crv 'P-192' for EC-HSM: use P-256, P-384, P-521 or P-256K.");
  });

  test('SKR consistency rules on create', async () => {
    const noPolicy = await call(`${vault.url}/keys/bad/create?${API}`, { method: 'POST', body: { kty: 'RSA-HSM', attributes: { exportable: true } } });
    expect(noPolicy.status).toBe(400);
    expect(noPolicy.body?.error).toEqual({ code: 'BadParameter', message: 'AKV.SKR.1004: Exportable keys must have release policy.' });
    const notExportable = await call(`${vault.url}/keys/bad/create?${API}`, { method: 'POST', body: { kty: 'RSA-HSM', release_policy: policy() } });
    expect(notExportable.body?.error.message).toBe('AKV.SKR.1005: Non-exportable keys must not have release policy.');
    const badPolicy = await call(`${vault.url}/keys/bad/create?${API}`, {
      method: 'POST',
      body: { kty: 'RSA-HSM', attributes: { exportable: true }, release_policy: { data: Buffer.from('{"version":"9"}').toString('base64url') } },
    });
    expect(badPolicy.status).toBe(400);
    expect(badPolicy.body?.error.message).toMatch(/version/);
    expect((await call(`${vault.url}/keys/bad?${API}`)).status).toBe(404);
  });
});

describe('release', () => {
  const runtime = () => JSON.parse(createWrappingKey().runtimeData.toString('utf8'));

  test('granted release answers {value: JWS} that verifies for host 127.0.0.1', async () => {
    const r = await release('exportable', await h.authority.mint(snpClaims(runtime())), { enc: 'RSA_AES_KEY_WRAP_384' });
    expect(r.status).toBe(200);
    expect(Object.keys(r.body ?? {})).toEqual(['value']);
    const payload = await verifyReleaseJws(r.body?.value, { vaultHost: '127.0.0.1', extraCaPem: [h.ca.certPem] });
    expect(payload).toMatchObject({ request: { 'api-version': '7.4', enc: 'RSA_AES_KEY_WRAP_384' } });
  });

  test('a principal without release permission → 403 Forbidden naming the release action; grant and revoke', async () => {
    const target = await h.authority.mint(snpClaims(runtime()));
    const denied = await release('exportable', target, { token: otherToken });
    expect(denied.status).toBe(403);
    expect(denied.body?.error.code).toBe('Forbidden');
    expect(denied.body?.error.innererror).toEqual({ code: 'ForbiddenByRbac' });
    expect(denied.body?.error.message).toContain("Action: 'Microsoft.KeyVault/vaults/keys/release/action'");
    expect(denied.body?.error.message).toContain(`oid=${h.imds.principals[1].objectId}`);
    vault.grantRelease(h.imds.principals[1].objectId);
    expect((await release('exportable', target, { token: otherToken })).status).toBe(200);
    vault.revokeRelease(h.imds.principals[1].objectId);
    expect((await release('exportable', target, { token: otherToken })).status).toBe(403);
  });

  test('a principal without the read (get) permission → 403 ForbiddenByRbac naming the read action; grant back', async () => {
    const oid = h.imds.principals[0].objectId;
    vault.revokeRead(oid);
    try {
      const denied = await call(`${vault.url}/keys/exportable?${API}`);
      expect(denied.status).toBe(403);
      expect(denied.body?.error.innererror).toEqual({ code: 'ForbiddenByRbac' });
      expect(denied.body?.error.message).toContain("Action: 'Microsoft.KeyVault/vaults/keys/read'");
      expect((await call(`${vault.url}/keys/exportable/versions?${API}`)).status).toBe(403);
      // Reading and releasing are separate permissions.
      expect((await release('exportable', await h.authority.mint(snpClaims(runtime())))).status).toBe(200);
    } finally {
      vault.grantRead(oid);
    }
    expect((await call(`${vault.url}/keys/exportable?${API}`)).status).toBe(200);
  });

  test('a non-exportable key is refused', async () => {
    const r = await release('plain', await h.authority.mint(snpClaims(runtime())));
    expect(r.status).toBe(400);
    expect(r.body?.error.code).toBe('BadParameter');
    expect(r.body?.error.message).toMatch(/not exportable/);
  });

  /** Azure's 403 body for a release: its code, its message, innererror AccessDenied, and nothing else. */
  const azure403 = (message: string) => ({ error: { code: 'Forbidden', message, innererror: { code: 'AccessDenied' } } });
  const NOT_VERIFIED = 'Target environment attestation statement cannot be verified.';

  test('hostdata mismatch → 403 with exactly the service answer: no claim detail', async () => {
    const r = await release('exportable', await h.authority.mint(snpClaims(runtime(), { 'x-ms-sevsnpvm-hostdata': 'b'.repeat(64) })));
    expect(r.status).toBe(403);
    expect(r.body).toEqual(azure403('Target environment attestation does not meet key release policy requirements.'));
  });

  test('a token from an authority not in the policy is refused as Azure does', async () => {
    const r = await release('exportable', await h.foreign.mint(snpClaims(runtime())));
    expect(r.status).toBe(403);
    expect(r.body).toEqual(azure403(NOT_VERIFIED));
  });

  test('a token claiming the policy authority but signed by another key is refused', async () => {
    const forged = await h.foreign.mint(snpClaims(runtime()));
    const [hd, , sig] = forged.split('.');
    const claims = { ...snpClaims(runtime()), iss: h.authority.url, exp: Math.floor(Date.now() / 1000) + 600 };
    const r = await release('exportable', `${hd}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${sig}`);
    expect(r.status).toBe(403);
    expect(r.body).toEqual(azure403(NOT_VERIFIED));
  });

  test('expired and not-yet-valid tokens are refused (a valid one from the same authority is not)', async () => {
    const expired = await release('exportable', await h.authority.mint(snpClaims(runtime()), { expiresInSeconds: -600 }));
    expect(expired.status).toBe(403);
    expect(expired.body).toEqual(azure403(NOT_VERIFIED));
    const early = await release('exportable', await h.authority.mint(snpClaims(runtime()), { notBeforeOffsetSeconds: 3600 }));
    expect(early.status).toBe(403);
    expect(early.body).toEqual(azure403(NOT_VERIFIED));
    expect((await release('exportable', await h.authority.mint(snpClaims(runtime())))).status).toBe(200);
  });

  test('no encryption key in x-ms-runtime, unknown enc, missing target → 400', async () => {
    const noKey = await release('exportable', await h.authority.mint(snpClaims({ keys: [{ kty: 'RSA', key_ops: ['sign'] }] })));
    expect(noKey.status).toBe(400);
    expect(noKey.body?.error.message).toMatch(/x-ms-runtime\.keys/);
    const badEnc = await release('exportable', await h.authority.mint(snpClaims(runtime())), { enc: 'A256KW' });
    expect(badEnc.status).toBe(400);
    const noTarget = await call(`${vault.url}/keys/exportable/release?${API}`, { method: 'POST', body: {} });
    expect(noTarget.status).toBe(400);
  });

  test('the wrapping key may be marked with use=enc instead of key_ops', async () => {
    const jwk = runtime().keys[0];
    delete jwk.key_ops;
    const r = await release('exportable', await h.authority.mint(snpClaims({ keys: [{ kty: 'RSA', use: 'sig', n: jwk.n, e: jwk.e }, { ...jwk, use: 'enc' }] })));
    expect(r.status).toBe(200);
  });
});
