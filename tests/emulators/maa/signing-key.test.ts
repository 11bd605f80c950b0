import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createSigningKey, loadOrCreateSigningKey, SIGNING_CERT_FILE, SIGNING_KEY_FILE } from '../../../src/emulators/maa/signing-key';
import { buildCertificate, pemOf } from '../../../src/asn1/x509';
import { keysOfJwks, publicKeyOfJwk } from '../../../src/maa/verify-token';
import { certificatesFromPem } from '../../../src/asn1/certificate';

describe('MAA emulator signing key', () => {
  const made: string[] = [];
  const mk = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-maa-key-'));
    made.push(d);
    return d;
  };
  afterAll(() => {
    for (const d of made) fs.rmSync(d, { recursive: true, force: true });
  });

  it('creates a 0600 RSA key and a matching self-signed certificate, then reloads both', () => {
    const dir = mk();
    const a = loadOrCreateSigningKey(dir);
    expect(fs.statSync(path.join(dir, SIGNING_KEY_FILE)).mode & 0o777).toBe(0o600);
    expect(a.kid).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    const cert = certificatesFromPem(a.certPem)[0];
    expect(cert.publicKey.equals(a.publicKey)).toBe(true);
    expect(cert.verify(a.publicKey)).toBe(true);
    const b = loadOrCreateSigningKey(dir);
    expect(b.kid).toBe(a.kid);
    expect(b.certPem).toBe(a.certPem);
  });

  it('re-issues a certificate that does not match the key, keeping the kid', () => {
    const dir = mk();
    const a = loadOrCreateSigningKey(dir);
    const other = loadOrCreateSigningKey(mk());
    fs.writeFileSync(path.join(dir, SIGNING_CERT_FILE), other.certPem);
    const b = loadOrCreateSigningKey(dir);
    expect(b.kid).toBe(a.kid);
    expect(certificatesFromPem(b.certPem)[0].publicKey.equals(a.publicKey)).toBe(true);
  });

  it('re-issues a certificate about to expire', () => {
    const dir = mk();
    const a = loadOrCreateSigningKey(dir);
    const later = new Date(Date.parse(certificatesFromPem(a.certPem)[0].validTo) - 3600_000);
    const b = loadOrCreateSigningKey(dir, later);
    expect(b.kid).toBe(a.kid);
    expect(b.certPem).not.toBe(a.certPem);
  });

  it('is published as MAA publishes its keys: kid, kty, x5c; the certificate holds a PEM chain in 1.3.6.1.4.1.311.105.1', () => {
    const k = createSigningKey();
    expect(Object.keys(k.jwk)).toEqual(['x5c', 'kid', 'kty']);
    expect(k.jwk).toEqual({ x5c: [k.certDer.toString('base64')], kid: k.kid, kty: 'RSA' });
    const der = k.certDer;
    const oid = Buffer.from('06092b0601040182376901', 'hex');
    expect(der.includes(oid)).toBe(true);
    const text = der.subarray(der.indexOf(oid)).toString('latin1');
    // Two PEM certificates, the second at the start of a line: the one a PEM-first parser would take.
    expect(text.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(2);
    expect(text).toMatch(/-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n/);
    // Read as the sidecar reads it, the key is the RSA key of the certificate itself.
    const jwk = keysOfJwks({ keys: [k.jwk] }, 'emulator JWKS').get(k.kid);
    expect(jwk && publicKeyOfJwk(jwk, k.kid).equals(k.publicKey)).toBe(true);
  });

  it('re-issues a stored certificate without the quote extension (a state directory from before it), keeping the key', () => {
    const dir = mk();
    const a = loadOrCreateSigningKey(dir);
    const bare = pemOf(
      buildCertificate({
        subject: [['CN', 'old']],
        issuer: [['CN', 'old']],
        serialNumber: 2n,
        notBefore: new Date(Date.now() - 86_400_000),
        notAfter: new Date(Date.now() + 100 * 86_400_000),
        subjectPublicKey: a.publicKey,
        issuerPrivateKey: a.privateKey,
        signatureAlgorithm: 'rsa-sha256',
      }),
    );
    fs.writeFileSync(path.join(dir, SIGNING_CERT_FILE), bare);
    const b = loadOrCreateSigningKey(dir);
    expect(b.kid).toBe(a.kid);
    expect(b.certPem).not.toBe(bare);
    expect(b.certDer.includes(Buffer.from('-----BEGIN CERTIFICATE-----'))).toBe(true);
  });

  it('refuses a key file that does not parse', () => {
    const dir = mk();
    fs.writeFileSync(path.join(dir, SIGNING_KEY_FILE), 'not a key', { mode: 0o600 });
    expect(() => loadOrCreateSigningKey(dir)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }));
  });
});
