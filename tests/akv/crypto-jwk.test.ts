import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { releasedKeyToJwk } from '../../src/akv/jwk';
import { unwrapKeyMaterial, wrapKeyMaterial } from '../../src/akv/wrap';
import { createWrappingKey } from '../../src/akv/wrapping-key';

const releasedKeyError = expect.objectContaining({ code: 'ERR_RELEASED_KEY' });

describe('releasedKeyToJwk', () => {
  it.each(['oct', 'oct-HSM'])('%s: raw bytes become {kty:"oct", k} with kid and key_ops', (kty) => {
    const material = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');
    const jwk = releasedKeyToJwk({ kty, material, kid: 'https://v/keys/k/1', key_ops: ['encrypt', 'decrypt'] });
    expect(jwk).toEqual({ kty: 'oct', k: 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8', kid: 'https://v/keys/k/1', key_ops: ['encrypt', 'decrypt'] });
  });

  it.each(['RSA', 'RSA-HSM'])('%s: PKCS#8 becomes a private RSA JWK equal to the original key', (kty) => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const material = privateKey.export({ type: 'pkcs8', format: 'der' });
    const jwk = releasedKeyToJwk({ kty, material, kid: 'rk' });
    expect(jwk.kty).toBe('RSA');
    expect(jwk.kid).toBe('rk');
    expect(jwk.key_ops).toBeUndefined();
    for (const m of ['n', 'e', 'd', 'p', 'q', 'dp', 'dq', 'qi']) expect(typeof jwk[m as keyof typeof jwk]).toBe('string');
    const reimported = createPrivateKey({ key: jwk, format: 'jwk' });
    expect(reimported.export({ type: 'pkcs8', format: 'der' }).equals(material)).toBe(true);
  });

  it.each([
    ['EC', 'P-256'],
    ['EC-HSM', 'P-384'],
    ['EC', 'P-521'],
  ] as const)('%s %s: PKCS#8 becomes a private EC JWK that signs for the original public key', (kty, namedCurve) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
    const jwk = releasedKeyToJwk({ kty, material: privateKey.export({ type: 'pkcs8', format: 'der' }), key_ops: ['sign'] });
    expect(jwk).toMatchObject({ kty: 'EC', crv: namedCurve, key_ops: ['sign'] });
    expect(jwk.d).toBe(privateKey.export({ format: 'jwk' }).d);
    const reimported = createPrivateKey({ key: jwk, format: 'jwk' });
    expect(createPublicKey(reimported).export({ format: 'jwk' })).toEqual(publicKey.export({ format: 'jwk' }));
    const sig = sign('sha256', Buffer.from('m'), reimported);
    expect(verify('sha256', Buffer.from('m'), publicKey, sig)).toBe(true);
  });

  it('converts material that went through the full wrap/unwrap path', () => {
    const w = createWrappingKey();
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
    const unwrapped = unwrapKeyMaterial(wrapKeyMaterial(pkcs8, w.publicKey, 'CKM_RSA_AES_KEY_WRAP'), w.privateKey, 'CKM_RSA_AES_KEY_WRAP');
    expect(releasedKeyToJwk({ kty: 'EC-HSM', material: unwrapped }).d).toBe(privateKey.export({ format: 'jwk' }).d);
  });

  it('refuses unknown key types', () => {
    for (const kty of ['OKP', 'rsa', 'oct-hsm', '', 'AES']) {
      expect(() => releasedKeyToJwk({ kty, material: Buffer.alloc(32) })).toThrow(releasedKeyError);
    }
  });

  it('refuses empty material, non-PKCS#8 bytes and a PKCS#8 of the wrong algorithm', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'der' });
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'der' });
    expect(() => releasedKeyToJwk({ kty: 'oct', material: Buffer.alloc(0) })).toThrow(releasedKeyError);
    expect(() => releasedKeyToJwk({ kty: 'RSA', material: Buffer.alloc(32, 1) })).toThrow(releasedKeyError);
    expect(() => releasedKeyToJwk({ kty: 'RSA-HSM', material: ec })).toThrow(releasedKeyError);
    expect(() => releasedKeyToJwk({ kty: 'EC', material: rsa })).toThrow(releasedKeyError);
    // An SPKI public key is not private key material.
    const spki = createPublicKey(createPrivateKey({ key: ec, format: 'der', type: 'pkcs8' })).export({ type: 'spki', format: 'der' });
    expect(() => releasedKeyToJwk({ kty: 'EC', material: spki })).toThrow(releasedKeyError);
  });
});
