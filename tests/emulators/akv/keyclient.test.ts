/**
 * The official @azure/keyvault-keys KeyClient against the emulator: challenge flow, create,
 * import, get, list versions and release, for both flavours.
 */
import { createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { JsonWebKey as SdkJsonWebKey, KeyClient } from '@azure/keyvault-keys';
import { decodeKeyHsm } from '../../../src/akv/key-hsm';
import { buildReleasePolicy, encodeReleasePolicy } from '../../../src/akv/policy';
import { verifyReleaseJws } from '../../../src/akv/jws';
import { unwrapKeyMaterial, type ReleaseEnc } from '../../../src/akv/wrap';
import { createWrappingKey } from '../../../src/akv/wrapping-key';
import { startVaultEmulator, type VaultEmulator } from '../../../src/emulators/akv';
import { HOST_DATA, snpClaims, startHarness, type Harness } from './harness';

let h: Harness;
let vault: VaultEmulator;
let hsm: VaultEmulator;
let client: KeyClient;
let hsmClient: KeyClient;

function releasePolicy(authority: string) {
  const rp = encodeReleasePolicy(
    buildReleasePolicy({
      authority,
      anyOfGroups: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: HOST_DATA }, { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' }]],
    }),
  );
  return { contentType: rp.contentType, encodedPolicy: Buffer.from(rp.data, 'base64url') };
}

beforeAll(async () => {
  h = await startHarness();
  const common = { ca: h.ca, accessTokens: { publicKey: h.imds.publicKey, issuer: h.imds.issuer }, authorityFetch: h.fetch };
  vault = await startVaultEmulator({ ...common, flavour: 'vault', stateDir: path.join(h.dir, 'vault') });
  hsm = await startVaultEmulator({ ...common, flavour: 'hsm', stateDir: path.join(h.dir, 'hsm') });
  client = h.keyClient(vault.url);
  hsmClient = h.keyClient(hsm.url);
});

afterAll(async () => {
  await vault?.close();
  await hsm?.close();
  await h?.close();
});

/** Release through the SDK, verify the JWS like the sidecar does, and unwrap the material. */
async function releaseAndUnwrap(c: KeyClient, name: string, enc?: ReleaseEnc, version?: string) {
  const wk = createWrappingKey();
  const target = await h.authority.mint(snpClaims(JSON.parse(wk.runtimeData.toString('utf8'))));
  const released = await c.releaseKey(name, target, { ...(enc ? { algorithm: enc } : {}), ...(version ? { version } : {}) });
  const payload = (await verifyReleaseJws(released.value, { vaultHost: '127.0.0.1', extraCaPem: [h.ca.certPem] })) as {
    request: Record<string, unknown>;
    response: { key: { key: Record<string, unknown>; attributes: Record<string, unknown>; release_policy: Record<string, unknown> } };
  };
  const keyHsm = decodeKeyHsm(payload.response.key.key.key_hsm as string);
  const material = unwrapKeyMaterial(keyHsm.ciphertext, wk.privateKey, keyHsm.enc);
  return { payload, keyHsm, material, wrappingKid: wk.kid };
}

describe('KeyClient against the vault flavour', () => {
  test('create RSA-HSM exportable with a release policy, then get and list versions', async () => {
    const created = await client.createRsaKey('rsa-key', {
      hsm: true,
      keySize: 3072,
      exportable: true,
      releasePolicy: releasePolicy(h.authority.url),
    });
    expect(created.keyType).toBe('RSA-HSM');
    expect(created.id).toMatch(new RegExp(`^${vault.url}/keys/rsa-key/[0-9a-f]{32}$`));
    expect(created.key?.n?.length).toBe(384);
    expect(created.key?.d).toBeUndefined();
    expect(created.properties.exportable).toBe(true);
    expect(Buffer.from(created.properties.releasePolicy!.encodedPolicy!).toString('utf8')).toContain(HOST_DATA);

    const latest = await client.getKey('rsa-key');
    expect(latest.id).toBe(created.id);
    const second = await client.createRsaKey('rsa-key', { hsm: true, exportable: true });
    expect(second.properties.version).not.toBe(created.properties.version);
    // A later version inherits the policy of the first.
    expect(second.properties.releasePolicy?.encodedPolicy).toEqual(created.properties.releasePolicy?.encodedPolicy);
    const byVersion = await client.getKey('rsa-key', { version: created.properties.version });
    expect(byVersion.key?.n).toEqual(created.key?.n);

    const versions: string[] = [];
    for await (const p of client.listPropertiesOfKeyVersions('rsa-key')) versions.push(p.version!);
    expect(versions.sort()).toEqual([created.properties.version!, second.properties.version!].sort());
  });

  test('release of a created RSA-HSM key: JWS verifies, payload as PROTOCOLS §5, material matches the public key', async () => {
    const created = await client.createRsaKey('rsa-release', { hsm: true, exportable: true, releasePolicy: releasePolicy(h.authority.url) });
    const { payload, keyHsm, material, wrappingKid } = await releaseAndUnwrap(client, 'rsa-release');
    expect(keyHsm.enc).toBe('CKM_RSA_AES_KEY_WRAP');
    expect(keyHsm.kid).toBe(wrappingKid);
    expect(payload.request).toEqual({ 'api-version': '2025-07-01', enc: 'CKM_RSA_AES_KEY_WRAP', kid: `${vault.url}/keys/rsa-release` });
    const k = payload.response.key.key;
    expect(k.kid).toBe(created.id);
    expect(k.kty).toBe('RSA-HSM');
    expect(k.n).toBe(Buffer.from(created.key!.n!).toString('base64url'));
    expect(payload.response.key.attributes.exportable).toBe(true);
    expect(payload.response.key.release_policy.contentType).toBe('application/json; charset=utf-8');
    const priv = createPrivateKey({ key: material, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' });
    expect(priv.n).toBe(k.n);
  });

  test('import RSA with private parts as HSM, release with each enc returns the imported key', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const j = privateKey.export({ format: 'jwk' });
    const buf = (s?: string) => Buffer.from(s!, 'base64url');
    const jwk: SdkJsonWebKey = {
      kty: 'RSA',
      n: buf(j.n), e: buf(j.e), d: buf(j.d), p: buf(j.p), q: buf(j.q), dp: buf(j.dp), dq: buf(j.dq), qi: buf(j.qi),
    };
    const imported = await client.importKey('rsa-imported', jwk, {
      hardwareProtected: true,
      exportable: true,
      releasePolicy: releasePolicy(h.authority.url),
    });
    expect(imported.keyType).toBe('RSA-HSM');
    expect(imported.key?.d).toBeUndefined();
    for (const enc of ['CKM_RSA_AES_KEY_WRAP', 'RSA_AES_KEY_WRAP_256', 'RSA_AES_KEY_WRAP_384'] as const) {
      const { material, keyHsm, payload } = await releaseAndUnwrap(client, 'rsa-imported', enc, imported.properties.version);
      expect(keyHsm.enc).toBe(enc);
      expect(payload.request.enc).toBe(enc);
      expect(material).toEqual(privateKey.export({ type: 'pkcs8', format: 'der' }));
    }
  });

  test('EC-HSM P-384 create and release; imported EC P-521 releases its own private key', async () => {
    const created = await client.createEcKey('ec-created', { hsm: true, curve: 'P-384', exportable: true, releasePolicy: releasePolicy(h.authority.url) });
    expect(created.keyType).toBe('EC-HSM');
    expect(created.key?.crv).toBe('P-384');
    const r1 = await releaseAndUnwrap(client, 'ec-created');
    const jwk1 = createPrivateKey({ key: r1.material, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' });
    expect(jwk1.crv).toBe('P-384');
    expect(jwk1.x).toBe(Buffer.from(created.key!.x!).toString('base64url'));

    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp521r1' });
    const j = privateKey.export({ format: 'jwk' });
    const imported = await client.importKey(
      'ec-imported',
      { kty: 'EC-HSM', crv: 'P-521', x: Buffer.from(j.x!, 'base64url'), y: Buffer.from(j.y!, 'base64url'), d: Buffer.from(j.d!, 'base64url') },
      { exportable: true, releasePolicy: releasePolicy(h.authority.url) },
    );
    expect(imported.keyType).toBe('EC-HSM');
    expect(imported.key?.d).toBeUndefined();
    const r2 = await releaseAndUnwrap(client, 'ec-imported');
    expect(r2.material).toEqual(privateKey.export({ type: 'pkcs8', format: 'der' }));
  });
});

describe('KeyClient against the managed HSM flavour', () => {
  test('oct-HSM keys of each size (import) and a created one release their bytes', async () => {
    for (const bits of [128, 192, 256]) {
      const k = randomBytes(bits / 8);
      const imported = await hsmClient.importKey(`oct-${bits}`, { kty: 'oct-HSM', k }, { exportable: true, releasePolicy: releasePolicy(h.authority.url) });
      expect(imported.keyType).toBe('oct-HSM');
      expect(imported.key?.k).toBeUndefined();
      const { material } = await releaseAndUnwrap(hsmClient, `oct-${bits}`, 'RSA_AES_KEY_WRAP_256');
      expect(material).toEqual(k);
    }
    const created = await hsmClient.createOctKey('oct-created', { hsm: true, keySize: 256, exportable: true, releasePolicy: releasePolicy(h.authority.url) });
    expect(created.keyType).toBe('oct-HSM');
    const { material } = await releaseAndUnwrap(hsmClient, 'oct-created');
    expect(material.length).toBe(32);
  });

  test('software key types are refused on managed HSM; imports become HSM keys', async () => {
    await expect(hsmClient.createRsaKey('soft', { exportable: false })).rejects.toMatchObject({ statusCode: 400, code: 'BadParameter' });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const j = privateKey.export({ format: 'jwk' });
    const imported = await hsmClient.importKey('ec-soft', { kty: 'EC', crv: 'P-256', x: Buffer.from(j.x!, 'base64url'), y: Buffer.from(j.y!, 'base64url'), d: Buffer.from(j.d!, 'base64url') });
    expect(imported.keyType).toBe('EC-HSM');
    expect(imported.properties.exportable).toBe(false);
  });
});

describe('persistence', () => {
  test('a restarted emulator keeps every key and version; files are 0600', async () => {
    const stateDir = path.join(h.dir, 'restart');
    const common = { ca: h.ca, accessTokens: { publicKey: h.imds.publicKey, issuer: h.imds.issuer }, authorityFetch: h.fetch };
    const first = await startVaultEmulator({ ...common, flavour: 'hsm', stateDir });
    const k = randomBytes(32);
    const v1 = await h.keyClient(first.url).importKey('persisted', { kty: 'oct-HSM', k }, { exportable: true, releasePolicy: releasePolicy(h.authority.url) });
    const v2 = await h.keyClient(first.url).createOctKey('persisted', { hsm: true, exportable: true });
    await first.close();
    const file = path.join(stateDir, 'keys', 'persisted.json');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(path.join(stateDir, 'keys')).filter((f) => f.endsWith('.tmp'))).toEqual([]);

    const second = await startVaultEmulator({ ...common, flavour: 'hsm', stateDir });
    try {
      const c = h.keyClient(second.url);
      expect((await c.getKey('persisted')).properties.version).toBe(v2.properties.version);
      const { material } = await releaseAndUnwrap(c, 'persisted', undefined, v1.properties.version);
      expect(material).toEqual(k);
    } finally {
      await second.close();
    }
  });
});
