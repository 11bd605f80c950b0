import { constants, createCipheriv, createHash, createPublicKey, generateKeyPairSync, privateDecrypt, randomBytes, type KeyObject } from 'node:crypto';
import { SoftwareKekSource } from '../../src/akv/software-kek';
import { aesKwpUnwrap, aesKwpWrap, RELEASE_ENCS, unwrapKeyMaterial, wrapKeyMaterial, type ReleaseEnc } from '../../src/akv/wrap';
import { VerificationError } from '../../src/common/errors';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// RFC 5649 §6: 192-bit KEK, two key sizes.
const RFC5649_KEK = hex('5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8');
const RFC5649 = [
  { key: hex('c37b7e6492584340 bed1220780894115 5068f738'), wrapped: hex('138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a') },
  { key: hex('466f7250617369'), wrapped: hex('afbeb0f07dfbf541 9200f2ccb50bb24f') },
];

/** RFC 8017 §7.1.2 OAEP decoding done here by hand, so the MGF1 hash is checked independently of OpenSSL's defaults. */
function oaepDecodeByHand(c: Buffer, hash: 'sha1' | 'sha256' | 'sha384'): Buffer {
  const em = privateDecrypt({ key: rsa.privateKey, padding: constants.RSA_NO_PADDING }, c);
  const hLen = createHash(hash).digest().length;
  const mgf1 = (seed: Buffer, len: number) => {
    const out: Buffer[] = [];
    for (let i = 0; out.length * hLen < len; i++) {
      const ctr = Buffer.alloc(4);
      ctr.writeUInt32BE(i);
      out.push(createHash(hash).update(seed).update(ctr).digest());
    }
    return Buffer.concat(out).subarray(0, len);
  };
  const xor = (a: Buffer, b: Buffer) => Buffer.from(a.map((x, i) => x ^ b[i]));
  expect(em[0]).toBe(0);
  const maskedSeed = em.subarray(1, 1 + hLen);
  const maskedDb = em.subarray(1 + hLen);
  const seed = xor(maskedSeed, mgf1(maskedDb, hLen));
  const db = xor(maskedDb, mgf1(seed, maskedDb.length));
  expect(db.subarray(0, hLen).equals(createHash(hash).digest())).toBe(true);
  const one = db.indexOf(1, hLen);
  expect(db.subarray(hLen, one).every((b) => b === 0)).toBe(true);
  return db.subarray(one + 1);
}

const unwrapError = expect.objectContaining({ code: 'ERR_VERIFICATION', step: 'unwrap' });

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });

const materials: [string, Buffer][] = [
  ['16-byte oct', Buffer.alloc(16, 0x11)],
  ['24-byte oct', Buffer.alloc(24, 0x22)],
  ['32-byte oct', Buffer.alloc(32, 0x33)],
  ['RSA-2048 PKCS#8', generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'der' })],
  ['EC P-384 PKCS#8', generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'der' })],
];

describe('RFC 5649 AES key wrap with padding', () => {
  it.each(RFC5649.map((v) => [v.key.length, v] as const))('matches the §6 vector for a %i-byte key, both ways', (_n, v) => {
    expect(aesKwpWrap(RFC5649_KEK, v.key).toString('hex')).toBe(v.wrapped.toString('hex'));
    expect(aesKwpUnwrap(RFC5649_KEK, v.wrapped).toString('hex')).toBe(v.key.toString('hex'));
  });

  it('refuses a flipped bit, a wrong KEK and bad lengths as unwrap verification errors', () => {
    for (const v of RFC5649) {
      for (const at of [0, v.wrapped.length - 1]) {
        const bad = Buffer.from(v.wrapped);
        bad[at] ^= 0x01;
        expect(() => aesKwpUnwrap(RFC5649_KEK, bad)).toThrow(unwrapError);
      }
      const wrongKek = Buffer.from(RFC5649_KEK);
      wrongKek[5] ^= 0x80;
      expect(() => aesKwpUnwrap(wrongKek, v.wrapped)).toThrow(unwrapError);
    }
    expect(() => aesKwpUnwrap(RFC5649_KEK, Buffer.alloc(8))).toThrow(unwrapError);
    expect(() => aesKwpUnwrap(RFC5649_KEK, RFC5649[0].wrapped.subarray(0, 28))).toThrow(unwrapError);
    expect(() => aesKwpUnwrap(RFC5649_KEK, RFC5649[0].wrapped.subarray(0, 24))).toThrow(unwrapError);
  });

  // Single-block case (≤ 8 bytes): the wrap is one AES-ECB block of AIV || MLI || padded data, so we
  // can forge blocks that decrypt to a valid AIV but a bad MLI or non-zero padding.
  const forge = (block: Buffer) => {
    const c = createCipheriv('aes-192-ecb', RFC5649_KEK, null).setAutoPadding(false);
    return Buffer.concat([c.update(block), c.final()]);
  };

  it('accepts a hand-built single-block wrap (sanity check of the forging)', () => {
    expect(aesKwpUnwrap(RFC5649_KEK, forge(hex('a65959a6 00000003 616263 0000000000'))).toString()).toBe('abc');
  });

  it('refuses non-zero padding, an MLI of 0 or beyond the block, and a wrong AIV', () => {
    expect(() => aesKwpUnwrap(RFC5649_KEK, forge(hex('a65959a6 00000003 616263 0000000001')))).toThrow(unwrapError);
    expect(() => aesKwpUnwrap(RFC5649_KEK, forge(hex('a65959a6 00000000 0000000000000000')))).toThrow(unwrapError);
    expect(() => aesKwpUnwrap(RFC5649_KEK, forge(hex('a65959a6 00000009 6162636465666768')))).toThrow(unwrapError);
    expect(() => aesKwpUnwrap(RFC5649_KEK, forge(hex('a6a6a6a6 00000003 616263 0000000000')))).toThrow(unwrapError);
  });

  it('refuses empty material and KEKs that are not AES keys', () => {
    expect(() => aesKwpWrap(RFC5649_KEK, Buffer.alloc(0))).toThrow(expect.objectContaining({ code: 'ERR_KWP_INPUT' }));
    expect(() => aesKwpWrap(Buffer.alloc(20), Buffer.alloc(8))).toThrow(expect.objectContaining({ code: 'ERR_KEK_LENGTH' }));
  });
});

describe('wrapKeyMaterial / unwrapKeyMaterial', () => {
  const cases: [ReleaseEnc, string, Buffer][] = [];
  for (const enc of RELEASE_ENCS) for (const [name, m] of materials) cases.push([enc, name, m]);

  it.each(cases)('%s round-trips %s', (enc, _name, material) => {
    const ct = wrapKeyMaterial(material, rsa.publicKey, enc);
    // OAEP part is exactly the modulus; KWP adds the 8-byte AIV/MLI block and pads to 8.
    expect(ct.length).toBe(256 + 8 + Math.ceil(material.length / 8) * 8);
    expect(unwrapKeyMaterial(ct, rsa.privateKey, enc).equals(material)).toBe(true);
  });

  it('uses a fresh KEK every time', () => {
    const m = materials[2][1];
    const a = wrapKeyMaterial(m, rsa.publicKey, 'RSA_AES_KEY_WRAP_256');
    const b = wrapKeyMaterial(m, rsa.publicKey, 'RSA_AES_KEY_WRAP_256');
    expect(a.subarray(256).equals(b.subarray(256))).toBe(false);
  });

  it.each([
    ['CKM_RSA_AES_KEY_WRAP', 'sha1'],
    ['RSA_AES_KEY_WRAP_256', 'sha256'],
    ['RSA_AES_KEY_WRAP_384', 'sha384'],
  ] as const)('%s encrypts an AES-256 KEK with RSA-OAEP-%s and MGF1 of the same hash', (enc, hash) => {
    const ct = wrapKeyMaterial(materials[0][1], rsa.publicKey, enc);
    const kek = oaepDecodeByHand(ct.subarray(0, 256), hash);
    expect(kek.length).toBe(32);
    expect(aesKwpUnwrap(kek, ct.subarray(256)).equals(materials[0][1])).toBe(true);
  });

  const ct = wrapKeyMaterial(materials[3][1], rsa.publicKey, 'RSA_AES_KEY_WRAP_256');

  it('refuses a tampered OAEP part', () => {
    const bad = Buffer.from(ct);
    bad[17] ^= 0x04;
    expect(() => unwrapKeyMaterial(bad, rsa.privateKey, 'RSA_AES_KEY_WRAP_256')).toThrow(unwrapError);
  });

  it('refuses a tampered KWP part (first, middle and last byte)', () => {
    for (const at of [256, 256 + Math.floor((ct.length - 256) / 2), ct.length - 1]) {
      const bad = Buffer.from(ct);
      bad[at] ^= 0x20;
      expect(() => unwrapKeyMaterial(bad, rsa.privateKey, 'RSA_AES_KEY_WRAP_256')).toThrow(unwrapError);
    }
  });

  it('refuses truncation and a missing KWP part', () => {
    expect(() => unwrapKeyMaterial(ct.subarray(0, ct.length - 8), rsa.privateKey, 'RSA_AES_KEY_WRAP_256')).toThrow(unwrapError);
    expect(() => unwrapKeyMaterial(ct.subarray(0, 256), rsa.privateKey, 'RSA_AES_KEY_WRAP_256')).toThrow(unwrapError);
  });

  it('refuses the wrong private key and the wrong enc', () => {
    expect(() => unwrapKeyMaterial(ct, otherRsa.privateKey, 'RSA_AES_KEY_WRAP_256')).toThrow(unwrapError);
    expect(() => unwrapKeyMaterial(ct, rsa.privateKey, 'RSA_AES_KEY_WRAP_384')).toThrow(unwrapError);
    expect(() => unwrapKeyMaterial(ct, rsa.privateKey, 'CKM_RSA_AES_KEY_WRAP')).toThrow(VerificationError);
  });

  it('refuses unknown enc values and unsuitable keys with typed errors', () => {
    expect(() => wrapKeyMaterial(materials[0][1], rsa.publicKey, 'A256KW' as ReleaseEnc)).toThrow(expect.objectContaining({ code: 'ERR_RELEASE_ENC' }));
    expect(() => unwrapKeyMaterial(ct, rsa.privateKey, 'RSA-OAEP' as ReleaseEnc)).toThrow(expect.objectContaining({ code: 'ERR_RELEASE_ENC' }));
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(() => wrapKeyMaterial(materials[0][1], ec.publicKey, 'RSA_AES_KEY_WRAP_256')).toThrow(expect.objectContaining({ code: 'ERR_WRAPPING_KEY' }));
    expect(() => unwrapKeyMaterial(ct, rsa.publicKey as KeyObject, 'RSA_AES_KEY_WRAP_256')).toThrow(expect.objectContaining({ code: 'ERR_WRAPPING_KEY' }));
  });
});

describe('SoftwareKek: the key-encryption key of a release', () => {
  it.each(['CKM_RSA_AES_KEY_WRAP', 'RSA_AES_KEY_WRAP_256', 'RSA_AES_KEY_WRAP_384'] as const)('unwraps what the vault wrapped to its public JWK with %s', async (enc) => {
    const kek = await new SoftwareKekSource().take();
    expect(JSON.parse(kek.runtimeData.toString('utf8'))).toEqual({ keys: [kek.publicJwk] });
    const material = randomBytes(32);
    const publicKey = createPublicKey({ key: kek.publicJwk, format: 'jwk' });
    const keyHsm = { kid: 'k', enc, ciphertext: wrapKeyMaterial(material, publicKey, enc) };
    expect(await kek.unwrap(keyHsm, { maaToken: 'a.b.c' })).toEqual(material);
    const other = RELEASE_ENCS.find((e) => e !== enc) ?? enc;
    await expect(kek.unwrap({ ...keyHsm, enc: other }, { maaToken: 'a.b.c' })).rejects.toThrow(expect.objectContaining({ step: 'unwrap' }));
  });

  it('two takes never hand out the same key', async () => {
    const src = new SoftwareKekSource();
    const [a, b] = await Promise.all([src.take(), src.take()]);
    expect(a.publicJwk.n).not.toBe(b.publicJwk.n);
  });
});
