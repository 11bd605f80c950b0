import { generateKeyPairSync, type JsonWebKey, type KeyObject } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';
import { buildCertificate } from '../../src/asn1/x509';
import { VerificationError } from '../../src/common/errors';
import { JwksCache, publicKeyOfJwk, verifyMaaToken } from '../../src/maa/verify-token';
import { reportDataFor } from '../../src/snp/report';
import { startLoopback, trustingFetch, type Loopback, type Recorded, type Reply } from './loopback';
import { RUNTIME_DATA, RUNTIME_JSON } from './fixtures';

interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

function newKey(kid: string): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, privateKey, publicKey };
}

function jwkOf(k: SigningKey): JsonWebKey {
  return { ...k.publicKey.export({ format: 'jwk' }), kid: k.kid, use: 'sig' };
}

/** JWKS entry the way MAA's /certs serves it: kid, kty and a self-signed x5c, no n/e. */
function x5cOnlyJwkOf(k: SigningKey, issuer: string): JsonWebKey {
  const der = buildCertificate({
    subject: [['CN', issuer]],
    issuer: [['CN', issuer]],
    serialNumber: 1n,
    notBefore: new Date('2024-01-01T00:00:00Z'),
    notAfter: new Date('2034-01-01T00:00:00Z'),
    subjectPublicKey: k.publicKey,
    issuerPrivateKey: k.privateKey,
    signatureAlgorithm: 'rsa-sha256',
  });
  return { kid: k.kid, kty: 'RSA', x5c: [der.toString('base64')] } as JsonWebKey;
}

const REPORT_DATA = reportDataFor(RUNTIME_DATA);
const NOW = new Date('2025-06-01T12:00:00Z');
const NOW_S = Math.floor(NOW.getTime() / 1000);

describe('verifyMaaToken', () => {
  let maa: Loopback;
  let elsewhere: Loopback;
  let jwks: JsonWebKey[];
  let jwksUri: () => string;
  const fetch = trustingFetch();
  let k1: SigningKey;
  let k2: SigningKey;

  const route = (req: Recorded): Reply => {
    if (req.url === '/.well-known/openid-configuration') return { status: 200, body: { issuer: maa.url, jwks_uri: jwksUri() } };
    if (req.url === '/certs') return { status: 200, body: { keys: jwks } };
    return { status: 404, body: 'not found' };
  };

  beforeAll(async () => {
    k1 = newKey('key-1');
    k2 = newKey('key-2');
    maa = await startLoopback(route);
    elsewhere = await startLoopback(route);
  });
  afterAll(async () => {
    await maa.close();
    await elsewhere.close();
    fetch.destroy();
  });
  beforeEach(() => {
    jwks = [jwkOf(k1)];
    jwksUri = () => `${maa.url}/certs`;
    maa.requests.length = 0;
    elsewhere.requests.length = 0;
  });

  function claims(over: JWTPayload = {}): JWTPayload {
    return {
      iss: maa.url,
      iat: NOW_S - 60,
      nbf: NOW_S - 60,
      exp: NOW_S - 60 + 28800,
      jti: 'abc',
      'x-ms-attestation-type': 'sevsnpvm',
      'x-ms-runtime': RUNTIME_JSON,
      'x-ms-sevsnpvm-reportdata': REPORT_DATA.toString('hex'),
      'x-ms-sevsnpvm-is-debuggable': false,
      ...over,
    };
  }

  function sign(payload: JWTPayload, key: SigningKey = k1, header: Record<string, unknown> = {}): Promise<string> {
    return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: key.kid, jku: `${maa.url}/certs`, ...header }).sign(key.privateKey);
  }

  const verify = (token: string, extra: Partial<Parameters<typeof verifyMaaToken>[1]> = {}) =>
    verifyMaaToken(token, { authority: maa.url, fetch, expectedRuntimeData: RUNTIME_DATA, expectedReportData: REPORT_DATA, now: NOW, ...extra });

  async function failure(p: Promise<unknown>): Promise<VerificationError> {
    try {
      await p;
    } catch (err) {
      expect(err).toBeInstanceOf(VerificationError);
      return err as VerificationError;
    }
    throw new Error('expected verification to fail');
  }

  it('accepts a good token and returns its claims', async () => {
    const c = await verify(await sign(claims()));
    expect(c['x-ms-runtime']).toEqual(RUNTIME_JSON);
    expect(c['x-ms-sevsnpvm-reportdata']).toBe(REPORT_DATA.toString('hex'));
    expect(c['x-ms-sevsnpvm-is-debuggable']).toBe(false);
    expect(maa.requests.map((r) => r.url)).toEqual(['/.well-known/openid-configuration', '/certs']);
  });

  it('verifies against a given JWKS document without fetching anything, and names what the document lacks', async () => {
    const token = await sign(claims());
    const c = await verify(token, { jwks: { document: { keys: [jwkOf(k1)] }, name: 'saved.json' } });
    expect(c.iss).toBe(maa.url);
    expect(maa.requests).toEqual([]);
    expect((await failure(verify(token, { jwks: { document: { keys: [jwkOf(k2)] }, name: 'saved.json' } }))).message)
      .toBe('token key id "key-1" is not in saved.json');
    const noKeys = await failure(verify(token, { jwks: { document: { nope: 1 }, name: 'saved.json' } }));
    expect([noKeys.step, noKeys.message]).toEqual(['maa-jwks', 'saved.json has no "keys" array']);
    // The issuer is still checked against the authority.
    expect((await failure(verify(token, { authority: elsewhere.url, jwks: { document: { keys: [jwkOf(k1)] }, name: 'saved.json' } }))).step)
      .toBe('maa-token-issuer');
    expect(maa.requests).toEqual([]);
  });

  it('accepts an x5c-only JWKS entry (as MAA serves), an authority with a trailing slash, and an uppercase reportdata', async () => {
    jwks = [x5cOnlyJwkOf(k1, maa.url)];
    const c = await verify(await sign(claims({ 'x-ms-sevsnpvm-reportdata': REPORT_DATA.toString('hex').toUpperCase() })), { authority: `${maa.url}/` });
    expect(c.iss).toBe(maa.url);
  });

  it('refuses a token from another issuer', async () => {
    const e = await failure(verify(await sign(claims({ iss: 'https://sharedeus.eus.attest.azure.net' }))));
    expect(e.step).toBe('maa-token-issuer');
    expect(e.message).toContain('sharedeus.eus.attest.azure.net');
    expect((await failure(verify(await sign(claims({ iss: undefined }))))).step).toBe('maa-token-issuer');
  });

  it('refuses expired and not-yet-valid tokens, beyond the clock tolerance', async () => {
    const expired = await sign(claims({ iat: NOW_S - 30000, nbf: NOW_S - 30000, exp: NOW_S - 120 }));
    expect((await failure(verify(expired))).step).toBe('maa-token-expired');
    expect((await failure(verify(expired, { clockToleranceSeconds: 0 }))).message).toMatch(/expired at/);
    // Within the default 60 s leeway it still passes; without leeway it does not.
    const justExpired = await sign(claims({ exp: NOW_S - 10 }));
    await expect(verify(justExpired)).resolves.toMatchObject({ exp: NOW_S - 10 });
    expect((await failure(verify(justExpired, { clockToleranceSeconds: 0 }))).step).toBe('maa-token-expired');
    const future = await sign(claims({ nbf: NOW_S + 3600, iat: NOW_S + 3600, exp: NOW_S + 7200 }));
    expect((await failure(verify(future))).message).toMatch(/not valid before/);
    expect((await failure(verify(await sign(claims({ exp: undefined }))))).step).toBe('maa-token-expired');
  });

  it('refuses a token whose x-ms-runtime is not the runtime data that was sent', async () => {
    const other = { keys: [{ ...RUNTIME_JSON.keys[0], n: 'AQAB' }] };
    expect((await failure(verify(await sign(claims({ 'x-ms-runtime': other }))))).step).toBe('maa-token-runtime');
    expect((await failure(verify(await sign(claims({ 'x-ms-runtime': undefined }))))).step).toBe('maa-token-runtime');
    // Key order does not matter, values do.
    const reordered = JSON.parse(JSON.stringify({ keys: [Object.fromEntries(Object.entries(RUNTIME_JSON.keys[0]).reverse())] })) as object;
    await expect(verify(await sign(claims({ 'x-ms-runtime': reordered })))).resolves.toMatchObject({ 'x-ms-runtime': RUNTIME_JSON });
  });

  it('refuses a token whose reportdata is not the REPORT_DATA of the report', async () => {
    const wrong = Buffer.from(REPORT_DATA);
    wrong[0] ^= 1;
    expect((await failure(verify(await sign(claims({ 'x-ms-sevsnpvm-reportdata': wrong.toString('hex') }))))).step).toBe('maa-token-reportdata');
    expect((await failure(verify(await sign(claims({ 'x-ms-sevsnpvm-reportdata': undefined }))))).step).toBe('maa-token-reportdata');
  });

  it('refuses bad signatures, foreign keys and other algorithms', async () => {
    const good = await sign(claims());
    const [h, p, s] = good.split('.');
    const sig = Buffer.from(s, 'base64url');
    sig[10] ^= 0xff;
    expect((await failure(verify(`${h}.${p}.${sig.toString('base64url')}`))).step).toBe('maa-token-signature');
    // Payload swapped under a valid signature.
    const p2 = Buffer.from(JSON.stringify({ ...claims(), 'x-ms-sevsnpvm-is-debuggable': true })).toString('base64url');
    expect((await failure(verify(`${h}.${p2}.${s}`))).step).toBe('maa-token-signature');
    // Signed by a key the authority never published, claiming a published kid.
    expect((await failure(verify(await sign(claims(), { ...k2, kid: 'key-1' })))).step).toBe('maa-token-signature');
    // A symmetric algorithm (key-confusion attempt), and alg none.
    const hs = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'key-1' }).sign(Buffer.from('secret-secret-secret-secret-0123'));
    expect((await failure(verify(hs))).message).toMatch(/alg HS256 is not RS256/);
    const none = `${Buffer.from('{"alg":"none","kid":"key-1"}').toString('base64url')}.${p}.`;
    expect((await failure(verify(none))).step).toBe('maa-token-signature');
    expect((await failure(verify('garbage'))).message).toMatch(/malformed/);
    expect((await failure(verify(await sign(claims(), k1, { kid: undefined })))).message).toMatch(/no kid/);
  });

  it('caches the JWKS, and refreshes it once when a token names an unknown kid (key rotation)', async () => {
    const cache = new JwksCache();
    await verify(await sign(claims()), { jwksCache: cache });
    await verify(await sign(claims({ jti: 'second' })), { jwksCache: cache });
    expect(cache.fetchCount).toBe(1);
    expect(maa.requests.filter((r) => r.url === '/certs')).toHaveLength(1);

    jwks = [jwkOf(k2)]; // MAA rotated its signing key
    const c = await verify(await sign(claims({ jti: 'rotated' }), k2), { jwksCache: cache });
    expect(c.jti).toBe('rotated');
    expect(cache.fetchCount).toBe(2);

    // A kid that stays unknown after a refresh is refused.
    const e = await failure(verify(await sign(claims(), newKey('key-3')), { jwksCache: cache }));
    expect(e.step).toBe('maa-token-signature');
    expect(e.message).toMatch(/"key-3" is not in the JWKS/);
    expect(cache.fetchCount).toBe(3);
  });

  it('refetches a JWKS older than maxAgeMs', async () => {
    let t = 0;
    const cache = new JwksCache({ maxAgeMs: 1000, nowMs: () => t });
    await verify(await sign(claims()), { jwksCache: cache });
    t = 500;
    await verify(await sign(claims()), { jwksCache: cache });
    expect(cache.fetchCount).toBe(1);
    t = 2000;
    await verify(await sign(claims()), { jwksCache: cache });
    expect(cache.fetchCount).toBe(2);
  });

  it('shares one fetch between concurrent verifications', async () => {
    const cache = new JwksCache();
    const token = await sign(claims());
    await Promise.all([verify(token, { jwksCache: cache }), verify(token, { jwksCache: cache }), verify(token, { jwksCache: cache })]);
    expect(cache.fetchCount).toBe(1);
    expect(maa.requests.filter((r) => r.url === '/certs')).toHaveLength(1);
  });

  it('refuses a jwks_uri on another origin without fetching it', async () => {
    jwksUri = () => `${elsewhere.url}/certs`;
    const e = await failure(verify(await sign(claims())));
    expect(e.step).toBe('maa-jwks');
    expect(e.message).toMatch(/not on the authority's origin/);
    expect(elsewhere.requests).toHaveLength(0);
    jwksUri = () => `http://${maa.endpoint}/certs`;
    expect((await failure(verify(await sign(claims())))).step).toBe('maa-jwks');
  });

  it('refuses unusable metadata and JWKS documents', async () => {
    const original = maa.handler;
    try {
      maa.handler = (req) => (req.url === '/certs' ? { status: 200, body: { keys: 'no' } } : original(req));
      expect((await failure(verify(await sign(claims())))).message).toMatch(/no "keys" array/);
      maa.handler = (req) => (req.url === '/certs' ? { status: 200, body: 'not json' } : original(req));
      expect((await failure(verify(await sign(claims())))).message).toMatch(/JWKS is not JSON/);
      maa.handler = (req) => (req.url === '/.well-known/openid-configuration' ? { status: 200, body: { issuer: maa.url } } : original(req));
      expect((await failure(verify(await sign(claims())))).message).toMatch(/has no jwks_uri/);
      maa.handler = () => ({ status: 404, body: 'nope' });
      expect((await failure(verify(await sign(claims())))).message).toMatch(/HTTP 404/);
    } finally {
      maa.handler = original;
    }
  });

  it('checks its own inputs', async () => {
    const token = await sign(claims());
    await expect(verify(token, { authority: `http://${maa.endpoint}` })).rejects.toMatchObject({ code: 'ERR_MAA_AUTHORITY' });
    await expect(verify(token, { expectedReportData: Buffer.alloc(32) })).rejects.toMatchObject({ code: 'ERR_REPORT_DATA' });
    await expect(verify(token, { expectedRuntimeData: Buffer.from('{nope') })).rejects.toMatchObject({ code: 'ERR_RUNTIME_DATA' });
    expect(maa.requests).toHaveLength(0);
  });
});

describe('publicKeyOfJwk', () => {
  const k = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = k.publicKey.export({ format: 'jwk' });

  it('imports n/e and refuses what an MAA signing key cannot be', () => {
    expect(publicKeyOfJwk(jwk, 'a').equals(k.publicKey)).toBe(true);
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' });
    expect(() => publicKeyOfJwk(small, 'a')).toThrow(/1024-bit RSA, below 2048/);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    expect(() => publicKeyOfJwk(ec, 'a')).toThrow(/kty EC, expected RSA/);
    expect(() => publicKeyOfJwk({ ...jwk, use: 'enc' }, 'a')).toThrow(/use enc/);
    expect(() => publicKeyOfJwk({ ...jwk, alg: 'PS256' }, 'a')).toThrow(/alg PS256/);
    expect(() => publicKeyOfJwk({ kty: 'RSA' }, 'a')).toThrow(/neither n\/e nor x5c/);
  });

  it('refuses an entry whose n/e and x5c disagree', () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const der = buildCertificate({
      subject: [['CN', 'x']], issuer: [['CN', 'x']], serialNumber: 1n,
      notBefore: new Date('2024-01-01T00:00:00Z'), notAfter: new Date('2030-01-01T00:00:00Z'),
      subjectPublicKey: other.publicKey, issuerPrivateKey: other.privateKey, signatureAlgorithm: 'rsa-sha256',
    });
    expect(() => publicKeyOfJwk({ ...jwk, x5c: [der.toString('base64')] } as JsonWebKey, 'a')).toThrow(
      expect.objectContaining({ step: 'maa-jwks', message: expect.stringMatching(/different keys/) }),
    );
  });
});
