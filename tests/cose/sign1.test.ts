import { constants, generateKeyPairSync, KeyObject, sign as nodeSign } from 'node:crypto';
import { CborMap, CborTag, CborValue, encodeCbor } from '../../src/cose/cbor';
import { CoseAlg, parseSign1, sigStructure, signSign1, verifySign1 } from '../../src/cose/sign1';
import { describeVectors, vector } from '../helpers/vectors';
import { stepOf } from '../helpers/errors';
import { certificateFromDer } from '../../src/asn1/certificate';

const keys = {
  p256: generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  p384: generateKeyPairSync('ec', { namedCurve: 'P-384' }),
  p521: generateKeyPairSync('ec', { namedCurve: 'P-521' }),
  rsa: generateKeyPairSync('rsa', { modulusLength: 2048 }),
  rsa2: generateKeyPairSync('rsa', { modulusLength: 2048 }),
};

const ALG_KEYS: [string, number, { privateKey: KeyObject; publicKey: KeyObject }, number][] = [
  ['ES256', CoseAlg.ES256, keys.p256, 64],
  ['ES384', CoseAlg.ES384, keys.p384, 96],
  ['ES512', CoseAlg.ES512, keys.p521, 132],
  ['PS256', CoseAlg.PS256, keys.rsa, 256],
  ['PS384', CoseAlg.PS384, keys.rsa, 256],
  ['PS512', CoseAlg.PS512, keys.rsa, 256],
];

/** Assemble a COSE_Sign1 by hand so tests can plant any structure. */
function assemble(items: CborValue[], tag: number | null = 18): Buffer {
  return encodeCbor(tag === null ? items : new CborTag(tag, items));
}


describe('COSE_Sign1 sign and verify', () => {
  it.each(ALG_KEYS)('%s round-trips and refuses a changed payload', (_name, alg, kp, sigLen) => {
    const msg = signSign1({ payload: Buffer.from('hello'), alg, privateKey: kp.privateKey, contentType: 'text/plain' });
    expect(msg[0]).toBe(0xd2);
    const parsed = parseSign1(msg);
    expect(parsed.alg).toBe(alg);
    expect(parsed.signature.length).toBe(sigLen);
    expect(parsed.contentType).toBe('text/plain');
    expect(() => verifySign1(msg, kp.publicKey)).not.toThrow();
    const tampered = { ...parsed, payload: Buffer.from('hellp') };
    expect(stepOf(() => verifySign1(tampered, kp.publicKey))).toBe('cose-signature');
  });

  it('refuses a signature by another key of the same type', () => {
    const msg = signSign1({ payload: Buffer.from('x'), alg: CoseAlg.PS384, privateKey: keys.rsa.privateKey });
    expect(stepOf(() => verifySign1(msg, keys.rsa2.publicKey))).toBe('cose-signature');
  });

  it('refuses a key that does not fit the algorithm', () => {
    const msg = signSign1({ payload: Buffer.from('x'), alg: CoseAlg.ES384, privateKey: keys.p384.privateKey });
    expect(() => verifySign1(msg, keys.p256.publicKey)).toThrow(expect.objectContaining({ code: 'ERR_COSE_ALG' }));
    expect(() => verifySign1(msg, keys.rsa.publicKey)).toThrow(expect.objectContaining({ code: 'ERR_COSE_ALG' }));
    expect(() => signSign1({ payload: Buffer.from('x'), alg: CoseAlg.PS256, privateKey: keys.p256.privateKey })).toThrow(
      expect.objectContaining({ code: 'ERR_COSE_ALG' }),
    );
  });

  it('refuses unsupported algorithms with ERR_COSE_ALG', () => {
    const prot = encodeCbor(new Map([[1, -8]]));
    const msg = assemble([prot, new Map(), Buffer.from('x'), Buffer.alloc(64)]);
    expect(parseSign1(msg).alg).toBe(-8);
    expect(() => verifySign1(msg, keys.p256.publicKey)).toThrow(expect.objectContaining({ code: 'ERR_COSE_ALG' }));
    expect(() => signSign1({ payload: Buffer.from('x'), alg: -257, privateKey: keys.rsa.privateKey })).toThrow(
      expect.objectContaining({ code: 'ERR_COSE_ALG' }),
    );
  });

  it('requires PSS salt length equal to the hash length', () => {
    const prot = encodeCbor(new Map([[1, CoseAlg.PS384]]));
    const payload = Buffer.from('salted');
    const tbs = sigStructure(prot, payload);
    const sig = (saltLength: number): Buffer => nodeSign('sha384', tbs, { key: keys.rsa.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength });
    expect(() => verifySign1(assemble([prot, new Map(), payload, sig(48)]), keys.rsa.publicKey)).not.toThrow();
    expect(stepOf(() => verifySign1(assemble([prot, new Map(), payload, sig(32)]), keys.rsa.publicKey))).toBe('cose-signature');
  });

  it('requires raw r||s for ECDSA, not DER', () => {
    const prot = encodeCbor(new Map([[1, CoseAlg.ES384]]));
    const payload = Buffer.from('ecdsa');
    const derSig = nodeSign('sha384', sigStructure(prot, payload), { key: keys.p384.privateKey, dsaEncoding: 'der' });
    expect(stepOf(() => verifySign1(assemble([prot, new Map(), payload, derSig]), keys.p384.publicKey))).toBe('cose-signature');
  });

  it('binds the protected header bytes as sent', () => {
    const msg = parseSign1(signSign1({ payload: Buffer.from('p'), alg: CoseAlg.ES256, privateKey: keys.p256.privateKey, iss: 'a' }));
    // Same map, different (non-canonical) encoding: alg as a two-byte int.
    const reencoded = Buffer.concat([Buffer.from([0xa2, 0x01, 0x38, 0x06]), msg.protectedRaw.subarray(3)]);
    expect(stepOf(() => verifySign1({ ...msg, protectedRaw: reencoded }, keys.p256.publicKey))).toBe('cose-signature');
  });

  it('verifies with a detached payload supplied separately', () => {
    const attached = parseSign1(signSign1({ payload: Buffer.from('detached'), alg: CoseAlg.ES256, privateKey: keys.p256.privateKey }));
    const detached = assemble([attached.protectedRaw, new Map(), null, attached.signature]);
    expect(parseSign1(detached).payload).toBeNull();
    expect(() => verifySign1(detached, keys.p256.publicKey)).toThrow(expect.objectContaining({ code: 'ERR_COSE' }));
    expect(() => verifySign1(detached, keys.p256.publicKey, { detachedPayload: Buffer.from('detached') })).not.toThrow();
    expect(stepOf(() => verifySign1(detached, keys.p256.publicKey, { detachedPayload: Buffer.from('other') }))).toBe('cose-signature');
  });

  it('carries x5chain, iss, feed and extra headers, in order', () => {
    const extra: CborMap = new Map<string | number, CborValue>([['signingtime', new CborTag(1, 1700000000)]]);
    const one = parseSign1(
      signSign1({ payload: Buffer.from('{}'), alg: CoseAlg.PS384, privateKey: keys.rsa.privateKey, x5chain: [Buffer.from([1, 2])], iss: 'did:x', feed: 'f', protectedExtra: extra }),
    );
    expect(one.x5chain).toEqual([Buffer.from([1, 2])]);
    expect(one.protectedHeader.get(33)).toEqual(Buffer.from([1, 2]));
    expect([...one.protectedHeader.keys()]).toEqual([1, 33, 'iss', 'feed', 'signingtime']);
    expect(one.iss).toBe('did:x');
    expect(one.feed).toBe('f');
    const two = parseSign1(signSign1({ payload: Buffer.from('{}'), alg: CoseAlg.PS384, privateKey: keys.rsa.privateKey, x5chain: [Buffer.from([1]), Buffer.from([2])] }));
    expect(two.x5chain).toEqual([Buffer.from([1]), Buffer.from([2])]);
    expect(() =>
      signSign1({ payload: Buffer.from('{}'), alg: CoseAlg.PS384, privateKey: keys.rsa.privateKey, unprotected: new Map([[1, -7]]) }),
    ).toThrow(expect.objectContaining({ code: 'ERR_COSE' }));
  });

  it('builds Sig_structure exactly', () => {
    expect(sigStructure(Buffer.from('a10126', 'hex'), Buffer.alloc(0)).toString('hex')).toBe('846a5369676e61747572653143a101264040');
  });
});

describe('COSE_Sign1 structure errors', () => {
  const prot = encodeCbor(new Map([[1, CoseAlg.ES256]]));
  const cases: [string, Buffer][] = [
    ['not CBOR', Buffer.from([0x84, 0x40])],
    ['wrong tag', assemble([prot, new Map(), Buffer.alloc(0), Buffer.alloc(0)], 98)],
    ['three items', assemble([prot, new Map(), Buffer.alloc(0)])],
    ['not an array', encodeCbor(new CborTag(18, new Map()))],
    ['protected not bstr', assemble([new Map([[1, -7]]), new Map(), Buffer.alloc(0), Buffer.alloc(0)])],
    ['protected not a map', assemble([encodeCbor([1]), new Map(), Buffer.alloc(0), Buffer.alloc(0)])],
    ['unprotected not a map', assemble([prot, [], Buffer.alloc(0), Buffer.alloc(0)])],
    ['payload text', assemble([prot, new Map(), 'x', Buffer.alloc(0)])],
    ['signature missing', assemble([prot, new Map(), Buffer.alloc(0), null])],
    ['no alg', assemble([encodeCbor(new Map([[3, 'a']])), new Map([[1, -7]]), Buffer.alloc(0), Buffer.alloc(0)])],
    ['label in both buckets', assemble([prot, new Map([[1, -7]]), Buffer.alloc(0), Buffer.alloc(0)])],
    ['crit', assemble([encodeCbor(new Map<number, CborValue>([[1, -7], [2, [99]]])), new Map(), Buffer.alloc(0), Buffer.alloc(0)])],
    ['x5chain of ints', assemble([encodeCbor(new Map<number, CborValue>([[1, -7], [33, [1]]])), new Map(), Buffer.alloc(0), Buffer.alloc(0)])],
    ['iss not text', assemble([encodeCbor(new Map<string | number, CborValue>([[1, -7], ['iss', 1]])), new Map(), Buffer.alloc(0), Buffer.alloc(0)])],
  ];
  it.each(cases)('%s → ERR_COSE', (_n, bytes) => {
    expect(() => parseSign1(bytes)).toThrow(expect.objectContaining({ code: 'ERR_COSE', status: 400 }));
  });
});

describeVectors('COSE_Sign1 real UVM endorsements', () => {
  const real = (): [string, Buffer][] => [
    ['uvm_reference_info.cose', vector('real-milan/uvm_reference_info.cose')],
    ['reference-info-base64', Buffer.from(vector('real-milan/reference-info-base64').toString('ascii').trim(), 'base64')],
  ];

  it.each(['uvm_reference_info.cose', 'reference-info-base64'])('%s parses and verifies PS384 with its leaf', (name) => {
    const bytes = real().find(([n]) => n === name)![1];
    const m = parseSign1(bytes);
    expect(m.tagged).toBe(true);
    expect(m.alg).toBe(CoseAlg.PS384);
    expect(m.contentType).toBe('application/json');
    expect(m.x5chain).toHaveLength(3);
    expect(m.feed).toBe('ContainerPlat-AMD-UVM');
    expect(m.iss).toBe('did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::eku:1.3.6.1.4.1.311.76.59.1.2');
    expect([...m.protectedHeader.keys()]).toEqual([1, 3, 33, 34, 'iss', 'feed', 'signingtime']);
    expect([...m.unprotected.keys()]).toEqual(['timestamp']);
    expect(m.signature).toHaveLength(384);
    const leaf = certificateFromDer(m.x5chain[0]);
    expect(() => verifySign1(m, leaf)).not.toThrow();
    // The untagged array form carries the same signature.
    expect(() => verifySign1(bytes.subarray(1), leaf)).not.toThrow();
    expect(parseSign1(bytes.subarray(1)).tagged).toBe(false);
    // The intermediate's key is RSA too but did not sign it.
    expect(stepOf(() => verifySign1(m, certificateFromDer(m.x5chain[1])))).toBe('cose-signature');
  });
});
