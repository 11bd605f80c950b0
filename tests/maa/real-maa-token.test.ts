/**
 * A real MAA token checked against the real `/certs` JWKS of the instance that signed it (shared MAA,
 * East US; see ../shared/vectors/real-maa/README.md for where both were published). MAA's keys carry
 * only kid, kty and x5c, and its signing certificates hold PEM certificates as text inside their DER:
 * a verifier that lets Node pick a PEM block out of those bytes gets an Intel EC certificate instead.
 * The token is long expired, so it is verified at a time inside its lifetime, as `--at` does.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { certificateFromDer } from '../../src/asn1/certificate';
import { keysOfJwks, publicKeyOfJwk, verifyMaaToken } from '../../src/maa/verify-token';
import { runCli } from '../helpers/cli';
import { VECTORS_DIR, vectorPath } from '../helpers/vectors';

const AUTHORITY = 'https://sharedeus.eus.attest.azure.net';
const JWKS = 'real-maa/sharedeus-certs.json';
const TOKEN = 'real-maa/sharedeus-sgx-token.jwt';
// Inside the token's lifetime (iat 2023-09-26T14:15:47Z, exp 2023-09-26T22:15:47Z).
const AT = '2023-09-26T18:00:00Z';

const haveCapture = fs.existsSync(vectorPath(JWKS)) && fs.existsSync(vectorPath(TOKEN));
const describeCapture = haveCapture ? describe : describe.skip;
if (!haveCapture) console.warn(`SKIPPING "a real MAA token": no ${JWKS} under ${VECTORS_DIR}`);

describeCapture('a real MAA token and its real /certs capture', () => {
  const jwksText = haveCapture ? fs.readFileSync(vectorPath(JWKS), 'utf8') : '{}';
  const token = haveCapture ? fs.readFileSync(vectorPath(TOKEN), 'utf8').trim() : '';
  const jwks = JSON.parse(jwksText) as { keys: Record<string, unknown>[] };
  const kid = 'rFl9xM+g7TvX63y0iseZtIn20MD5SYAnGblKFasau8I=';

  it('is the shape the emulator copies: kid, kty, x5c only, signing certificates with PEM text inside', () => {
    expect(jwks.keys).toHaveLength(3);
    for (const k of jwks.keys) expect(Object.keys(k).sort()).toEqual(['kid', 'kty', 'x5c']);
    const der = Buffer.from((jwks.keys.find((k) => k.kid === kid)?.x5c as string[])[0], 'base64');
    expect(der.includes('-----BEGIN CERTIFICATE-----')).toBe(true);
    // Extension 1.3.6.1.4.1.311.105.1 (the SGX quote) is where the PEM text sits.
    expect(der.includes(Buffer.from('06092b0601040182376901', 'hex'))).toBe(true);
  });

  it('verifies with the RSA key of x5c[0] of the kid the token names', async () => {
    const claims = await verifyMaaToken(token, { authority: AUTHORITY, jwks: { document: jwks, name: JWKS }, now: new Date(AT) });
    expect(claims.iss).toBe(AUTHORITY);
    expect(claims['x-ms-attestation-type']).toBe('sgx');
    expect(claims['x-ms-sgx-mrenclave']).toBe('f56735aa42563627a832e0c7ba9911382eb68afed75830b3f97266f3e67bdc99');
  });

  it('takes every key from its own certificate, never from the PEM text inside it', () => {
    const keys = keysOfJwks(jwks, JWKS);
    expect([...keys.keys()]).toEqual([kid, 'dSsaF5uUxZO_LRycmQ4KJu3ctMc', 'lH/VQ9TL53cXpeFt3Vf9tiOv+rkWwV+5PbiNzgWcySQ=']);
    for (const [id, jwk] of keys) {
      const cert = certificateFromDer(Buffer.from((jwk as { x5c: string[] }).x5c[0], 'base64'), id);
      expect(cert.publicKey.asymmetricKeyType).toBe('rsa');
      if (id === 'lH/VQ9TL53cXpeFt3Vf9tiOv+rkWwV+5PbiNzgWcySQ=') {
        // A real 1024-bit MAA key: refused for its size, not mistaken for another key.
        expect(cert.publicKey.asymmetricKeyDetails?.modulusLength).toBe(1024);
        expect(() => publicKeyOfJwk(jwk, id)).toThrow(/is 1024-bit RSA, below 2048/);
      } else {
        expect(publicKeyOfJwk(jwk, id).equals(cert.publicKey)).toBe(true);
      }
    }
    expect(certificateFromDer(Buffer.from((jwks.keys[0].x5c as string[])[0], 'base64')).subject).toBe(`CN=${AUTHORITY}`);
  });

  describe('skr token verify --jwks', () => {
    let tmp: string;
    let tokenFile: string;
    let jwksFile: string;
    beforeAll(() => {
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-real-maa-'));
      tokenFile = path.join(tmp, 'token.jwt');
      jwksFile = path.join(tmp, 'certs.json');
      fs.writeFileSync(tokenFile, token);
      fs.writeFileSync(jwksFile, jwksText);
    });
    afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

    it('passes --at a time inside the lifetime and prints the claims', async () => {
      const r = await runCli('token', 'verify', tokenFile, '--authority', AUTHORITY, '--jwks', jwksFile, '--at', AT);
      expect(r.err).toMatch(new RegExp(`^OK: MAA token signed by key "${kid.replace(/[+/]/g, '\\$&')}" of ${AUTHORITY}`));
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out)['x-ms-attestation-type']).toBe('sgx');
    });

    it('fails at maa-token-expired today, not at maa-jwks', async () => {
      const r = await runCli('token', 'verify', tokenFile, '--authority', AUTHORITY, '--jwks', jwksFile);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/^FAILED at maa-token-expired: MAA token expired at 2023-09-26T22:15:47.000Z/);
    });
  });
});
