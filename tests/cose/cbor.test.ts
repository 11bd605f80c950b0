import fc from 'fast-check';
import { CborError, CborSimple, CborTag, CborValue, decodeCbor, decodeCborPrefix, encodeCbor } from '../../src/cose/cbor';

const h = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/** RFC 8949 Appendix A: [value, encoding] pairs that both decode and encode exactly. */
const TWO_WAY: [CborValue, string][] = [
  [0, '00'],
  [1, '01'],
  [10, '0a'],
  [23, '17'],
  [24, '1818'],
  [25, '1819'],
  [100, '1864'],
  [1000, '1903e8'],
  [1000000, '1a000f4240'],
  [1000000000000, '1b000000e8d4a51000'],
  [18446744073709551615n, '1bffffffffffffffff'],
  [-18446744073709551616n, '3bffffffffffffffff'],
  [-1, '20'],
  [-10, '29'],
  [-100, '3863'],
  [-1000, '3903e7'],
  [1.1, 'fb3ff199999999999a'],
  [-4.1, 'fbc010666666666666'],
  [1.0e300, 'fb7e37e43c8800759c'],
  [false, 'f4'],
  [true, 'f5'],
  [null, 'f6'],
  [undefined, 'f7'],
  [new CborSimple(16), 'f0'],
  [new CborSimple(255), 'f8ff'],
  [new CborTag(0, '2013-03-21T20:04:00Z'), 'c074323031332d30332d32315432303a30343a30305a'],
  [new CborTag(1, 1363896240), 'c11a514b67b0'],
  [new CborTag(23, h('01020304')), 'd74401020304'],
  [new CborTag(32, 'http://www.example.com'), 'd82076687474703a2f2f7777772e6578616d706c652e636f6d'],
  [Buffer.alloc(0), '40'],
  [h('01020304'), '4401020304'],
  ['', '60'],
  ['a', '6161'],
  ['IETF', '6449455446'],
  ['"\\', '62225c'],
  ['\u00fc', '62c3bc'],
  ['\u6c34', '63e6b0b4'],
  ['\ud800\udd51', '64f0908591'],
  [[], '80'],
  [[1, 2, 3], '83010203'],
  [[1, [2, 3], [4, 5]], '8301820203820405'],
  [range(1, 25), '98190102030405060708090a0b0c0d0e0f101112131415161718181819'],
  [new Map(), 'a0'],
  [new Map([[1, 2], [3, 4]]), 'a201020304'],
  [new Map<string, CborValue>([['a', 1], ['b', [2, 3]]]), 'a26161016162820203'],
  [['a', new Map([['b', 'c']])], '826161a161626163'],
  [new Map([['a', 'A'], ['b', 'B'], ['c', 'C'], ['d', 'D'], ['e', 'E']]), 'a56161614161626142616361436164614461656145'],
];

/** RFC 8949 Appendix A floats (decode only: the encoder writes 64-bit floats). */
const DECODE_ONLY: [number, string][] = [
  [0, 'f90000'],
  [-0, 'f98000'],
  [1, 'f93c00'],
  [1.5, 'f93e00'],
  [65504, 'f97bff'],
  [100000, 'fa47c35000'],
  [3.4028234663852886e38, 'fa7f7fffff'],
  [5.960464477539063e-8, 'f90001'],
  [0.00006103515625, 'f90400'],
  [-4, 'f9c400'],
  [Infinity, 'f97c00'],
  [NaN, 'f97e00'],
  [-Infinity, 'f9fc00'],
  [Infinity, 'fa7f800000'],
  [-Infinity, 'fbfff0000000000000'],
];

describe('CBOR RFC 8949 Appendix A', () => {
  it.each(TWO_WAY.map(([v, hex]) => [hex, v] as const))('decodes and re-encodes %s', (hex, v) => {
    expect(decodeCbor(h(hex))).toEqual(v);
    expect(encodeCbor(v).toString('hex')).toBe(hex);
  });

  it.each(DECODE_ONLY.map(([v, hex]) => [hex, v] as const))('decodes float %s', (hex, v) => {
    expect(Object.is(decodeCbor(h(hex)), v)).toBe(true);
  });

  it('decodes a bignum tag as a tag around its bytes', () => {
    expect(decodeCbor(h('c249010000000000000000'))).toEqual(new CborTag(2, h('010000000000000000')));
  });

  it('returns bigint only past 2^53 - 1, both signs', () => {
    expect(decodeCbor(h('1b001fffffffffffff'))).toBe(Number.MAX_SAFE_INTEGER);
    expect(decodeCbor(h('1b0020000000000000'))).toBe(2n ** 53n);
    expect(decodeCbor(h('3b001ffffffffffffe'))).toBe(-Number.MAX_SAFE_INTEGER);
    expect(decodeCbor(h('3b001fffffffffffff'))).toBe(-(2n ** 53n));
  });
});

describe('CBOR encoder', () => {
  it('uses the shortest integer form at every boundary', () => {
    const cases: [number | bigint, string][] = [
      [23, '17'], [24, '1818'], [255, '18ff'], [256, '190100'], [65535, '19ffff'], [65536, '1a00010000'],
      [4294967295, '1affffffff'], [4294967296, '1b0000000100000000'], [-24, '37'], [-25, '3818'], [-256, '38ff'], [-257, '390100'],
      [5n, '05'], [-(2n ** 64n), '3bffffffffffffffff'],
    ];
    for (const [v, hex] of cases) expect(encodeCbor(v).toString('hex')).toBe(hex);
  });

  it('encodes non-integral and unsafe numbers as 64-bit floats', () => {
    expect(encodeCbor(-0).toString('hex')).toBe('fb8000000000000000');
    expect(encodeCbor(NaN).toString('hex')).toBe('fb7ff8000000000000');
    expect(encodeCbor(2 ** 60).toString('hex')).toBe('fb43b0000000000000');
  });

  it('keeps map insertion order', () => {
    expect(encodeCbor(new Map<string | number, CborValue>([['z', 1], [1, 2]])).toString('hex')).toBe('a2617a010102');
  });

  it('refuses values CBOR cannot carry with ERR_CBOR', () => {
    for (const bad of [2n ** 64n, -(2n ** 64n) - 1n, new CborSimple(20), new CborSimple(256), '\ud800', { a: 1 } as unknown as CborValue]) {
      expect(() => encodeCbor(bad)).toThrow(expect.objectContaining({ code: 'ERR_CBOR' }));
    }
  });

  it('round-trips arbitrary values', () => {
    const leaf = fc.oneof(
      fc.integer(), fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n - 1n }), fc.double(), fc.string(), fc.boolean(), fc.constant(null),
      fc.constant(undefined), fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
    );
    const value = fc.letrec((tie) => ({
      v: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, tie('arr'), tie('map'), tie('tag')),
      arr: fc.array(tie('v'), { maxLength: 5 }),
      map: fc.uniqueArray(fc.tuple(fc.oneof(fc.integer(), fc.string()), tie('v')), { maxLength: 5, selector: (e) => e[0] }).map((es) => new Map(es)),
      tag: fc.tuple(fc.nat(), tie('v')).map(([t, v]) => new CborTag(t, v as CborValue)),
    })).v as fc.Arbitrary<CborValue>;
    fc.assert(
      fc.property(value, (v) => {
        const once = decodeCbor(encodeCbor(v));
        expect(encodeCbor(once)).toEqual(encodeCbor(v));
      }),
    );
  });
});

describe('CBOR decoder refuses hostile input with typed errors', () => {
  const expectCborError = (hex: string | Buffer, msg?: RegExp): void => {
    let err: unknown;
    try {
      decodeCbor(typeof hex === 'string' ? h(hex) : hex);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CborError);
    expect(err).toMatchObject({ code: 'ERR_CBOR', status: 400 });
    if (msg) expect((err as Error).message).toMatch(msg);
  };

  it('refuses every truncation of a valid item', () => {
    const full = h('a26161016162820203');
    for (let n = 0; n < full.length; n++) expectCborError(full.subarray(0, n), /truncated|declares/);
  });

  it('refuses declared lengths beyond the input before allocating', () => {
    expectCborError('5bffffffffffffffff', /declares/);
    expectCborError('5a7fffffff00', /declares/);
    expectCborError('7b0000000100000000', /declares/);
    expectCborError('9b00000000ffffffff00', /declares/);
    expectCborError('bb7fffffffffffffff', /declares/);
    expectCborError('a30102', /declares/);
  });

  it('refuses deep nesting without overflowing the stack', () => {
    expectCborError(Buffer.concat([Buffer.alloc(100000, 0x81), h('00')]), /nesting/);
    expectCborError(Buffer.concat([Buffer.alloc(100000, 0xc1), h('00')]), /nesting/);
    expect(decodeCbor(Buffer.concat([Buffer.alloc(64, 0x81), h('00')]))).toBeDefined();
    expect(() => decodeCbor(Buffer.concat([Buffer.alloc(10, 0x81), h('00')]), { maxDepth: 5 })).toThrow(CborError);
  });

  it('refuses indefinite lengths, reserved codes, stray breaks', () => {
    for (const hex of ['5f42010243030405ff', '7f657374726561646d696e67ff', '9fff', 'bf6346756ef563416d7421ff']) expectCborError(hex, /indefinite/);
    for (const hex of ['1c', '3d', '5e', 'fc', 'fd', 'fe']) expectCborError(hex, /reserved/);
    expectCborError('ff', /break/);
  });

  it('refuses malformed content', () => {
    expectCborError('62c328', /UTF-8/);
    expectCborError('a201020103', /duplicate/);
    expectCborError('a1410001', /key/);
    expectCborError('f810', /simple/);
    expectCborError('0000', /trailing/);
  });

  it('only ever throws CborError on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          decodeCbor(bytes);
        } catch (e) {
          expect(e).toBeInstanceOf(CborError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('decodeCborPrefix reports where an item ends', () => {
    expect(decodeCborPrefix(h('8301020399'), 0)).toEqual({ value: [1, 2, 3], end: 4 });
    expect(decodeCborPrefix(h('ff6161'), 1)).toEqual({ value: 'a', end: 3 });
    expect(() => decodeCborPrefix(h('00'), 5)).toThrow(CborError);
  });
});
