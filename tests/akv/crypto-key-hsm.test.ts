import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { decodeKeyHsm, encodeKeyHsm } from '../../src/akv/key-hsm';
import { unwrapKeyMaterial, wrapKeyMaterial } from '../../src/akv/wrap';
import { createWrappingKey, rsaJwkThumbprint } from '../../src/akv/wrapping-key';

const b64u = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const keyHsmError = expect.objectContaining({ code: 'ERR_KEY_HSM', status: 502 });

describe('key_hsm encode/decode', () => {
  const ciphertext = Buffer.from('00112233445566778899aabbccddeeff0011223344556677', 'hex');

  it('encodes exactly the vault layout and decodes it back', () => {
    const s = encodeKeyHsm({ kid: 'https://v.vault.azure.net/keys/k/1', enc: 'RSA_AES_KEY_WRAP_256', ciphertext });
    expect(s).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(JSON.parse(Buffer.from(s, 'base64url').toString())).toEqual({
      schema_version: '1.0',
      header: { kid: 'https://v.vault.azure.net/keys/k/1', alg: 'dir', enc: 'RSA_AES_KEY_WRAP_256' },
      ciphertext: ciphertext.toString('base64url'),
    });
    const d = decodeKeyHsm(s);
    expect(d).toEqual({ schemaVersion: '1.0', kid: 'https://v.vault.azure.net/keys/k/1', alg: 'dir', enc: 'RSA_AES_KEY_WRAP_256', ciphertext });
  });

  it('accepts the members in the order the real vault sends them (ciphertext first, header kid/alg/enc reordered)', () => {
    const s = b64u(`{"ciphertext":"${ciphertext.toString('base64url')}","header":{"alg":"dir","enc":"CKM_RSA_AES_KEY_WRAP","kid":"k"},"schema_version":"1.0"}`);
    expect(decodeKeyHsm(s).enc).toBe('CKM_RSA_AES_KEY_WRAP');
  });

  const good = { schema_version: '1.0', header: { kid: 'k', alg: 'dir', enc: 'RSA_AES_KEY_WRAP_384' }, ciphertext: ciphertext.toString('base64url') };
  const malformed: [string, unknown][] = [
    ['empty string', ''],
    ['not base64url', '***'],
    ['not JSON', b64u('{nope')],
    ['a JSON array', b64u([good])],
    ['schema_version 2.0', b64u({ ...good, schema_version: '2.0' })],
    ['missing schema_version', b64u({ header: good.header, ciphertext: good.ciphertext })],
    ['header not an object', b64u({ ...good, header: 'dir' })],
    ['alg RSA-OAEP', b64u({ ...good, header: { ...good.header, alg: 'RSA-OAEP' } })],
    ['unknown enc', b64u({ ...good, header: { ...good.header, enc: 'A256KW' } })],
    ['kid a number', b64u({ ...good, header: { ...good.header, kid: 7 } })],
    ['missing ciphertext', b64u({ schema_version: '1.0', header: good.header })],
    ['ciphertext with junk', b64u({ ...good, ciphertext: 'AAAA$$$$' })],
    ['empty ciphertext', b64u({ ...good, ciphertext: '' })],
  ];
  it.each(malformed)('refuses %s with ERR_KEY_HSM', (_name, s) => {
    expect(() => decodeKeyHsm(s as string)).toThrow(keyHsmError);
  });

  it('refuses to encode an unknown enc', () => {
    expect(() => encodeKeyHsm({ kid: 'k', enc: 'nope' as 'CKM_RSA_AES_KEY_WRAP', ciphertext })).toThrow(keyHsmError);
  });
});

describe('createWrappingKey', () => {
  it('builds an RSA-2048 key with an RFC 7638 kid and the exact runtime JWKS bytes', () => {
    const w = createWrappingKey();
    expect(w.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(w.publicKey.asymmetricKeyDetails?.publicExponent).toBe(65537n);
    const jwk = w.publicKey.export({ format: 'jwk' });
    expect(w.runtimeData.toString('utf8')).toBe(`{"keys":[{"kty":"RSA","n":"${jwk.n}","e":"AQAB","kid":"${w.kid}","key_ops":["encrypt"]}]}`);
    expect(JSON.parse(w.runtimeData.toString())).toEqual(w.runtimeJwks);
    // RFC 7638 thumbprint computed independently from the required members in lexicographic order.
    const tp = createHash('sha256').update(`{"e":"AQAB","kty":"RSA","n":"${jwk.n}"}`).digest('base64url');
    expect(w.kid).toBe(tp);
    // The private half matches the advertised public key.
    expect(createPublicKey(w.privateKey).export({ format: 'jwk' })).toEqual(jwk);
  });

  it('matches the RFC 7638 §3.1 example thumbprint', () => {
    const n =
      '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw';
    expect(rsaJwkThumbprint(n, 'AQAB')).toBe('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
  });

  it('its runtime key is what the vault wraps to and only its private half unwraps', () => {
    const w = createWrappingKey();
    const vaultSide = createPublicKey({ key: w.runtimeJwks.keys[0], format: 'jwk' });
    const material = Buffer.alloc(32, 9);
    const ct = wrapKeyMaterial(material, vaultSide, 'RSA_AES_KEY_WRAP_256');
    expect(unwrapKeyMaterial(ct, w.privateKey, 'RSA_AES_KEY_WRAP_256').equals(material)).toBe(true);
    const stranger = createPrivateKey(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    expect(() => unwrapKeyMaterial(ct, stranger, 'RSA_AES_KEY_WRAP_256')).toThrow(expect.objectContaining({ step: 'unwrap' }));
    expect(createWrappingKey().kid).not.toBe(w.kid);
  });
});
