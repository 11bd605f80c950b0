import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadOrCreateSigningKey, SIGNING_CERT_FILE, SIGNING_KEY_FILE } from '../../../src/emulators/maa/signing-key';
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

  it('refuses a key file that does not parse', () => {
    const dir = mk();
    fs.writeFileSync(path.join(dir, SIGNING_KEY_FILE), 'not a key', { mode: 0o600 });
    expect(() => loadOrCreateSigningKey(dir)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }));
  });
});
