import { X509Certificate } from 'node:crypto';
import { certificateFromDer, certificatesFromPem } from '../../src/asn1/certificate';
import { generateKeyPairSync } from 'node:crypto';
import { buildCertificate, pemOf, rawExtension } from '../../src/asn1/x509';
import { der } from '../../src/asn1/der';

function selfSigned(cn: string, embeddedPem?: string): Buffer {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  return buildCertificate({
    subject: [['CN', cn]], issuer: [['CN', cn]], serialNumber: 1n,
    notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000),
    subjectPublicKey: publicKey, issuerPrivateKey: privateKey, signatureAlgorithm: 'ecdsa-sha256',
    // As MAA's signing certificates do: an extension whose bytes hold PEM certificate text.
    extensions: embeddedPem ? [rawExtension('1.3.6.1.4.1.311.105.1', false, der.octets(Buffer.from(`{"collateral":\n${embeddedPem}}`)))] : [],
  });
}

function createTestCa(): { leafDer: Buffer; plainDer: Buffer; otherPem: string } {
  const otherPem = pemOf(selfSigned('embedded'));
  return { leafDer: selfSigned('leaf', otherPem), plainDer: selfSigned('plain'), otherPem };
}

describe('certificateFromDer', () => {
  const { leafDer, plainDer, otherPem } = createTestCa();

  it('returns the certificate whose DER is exactly the input', () => {
    expect(certificateFromDer(leafDer).raw.equals(leafDer)).toBe(true);
  });

  it('is not fooled by PEM text inside the DER (Node alone returns the embedded certificate)', () => {
    // The trap the function exists for: given a Buffer, Node prefers a PEM block found in the bytes.
    // eslint-disable-next-line no-restricted-syntax -- the one place that shows what the rule prevents
    expect(new X509Certificate(leafDer).subject).toBe('CN=embedded');
    expect(certificateFromDer(leafDer).subject).toBe('CN=leaf');
  });

  it('refuses bytes after the certificate', () => {
    expect(() => certificateFromDer(Buffer.concat([plainDer, Buffer.from(otherPem)]))).toThrow(/certificate: \d+ trailing bytes after the certificate/);
  });

  it('refuses bytes that are not a certificate, naming what was read', () => {
    expect(() => certificateFromDer(Buffer.from('hello'), 'MAA signing key')).toThrow(/MAA signing key: not a DER certificate/);
    expect(() => certificateFromDer(Buffer.from([0x30, 0x03, 2, 1, 3]), 'x5c[0]')).toThrow(/x5c\[0\]: not a valid X.509 certificate/);
  });

  describe('certificatesFromPem', () => {
    it('returns every certificate of the text in order, each exactly its block, not the PEM inside it', () => {
      const certs = certificatesFromPem(`junk before\n${pemOf(leafDer)}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n${pemOf(plainDer)}`);
      expect(certs.map((c) => c.subject)).toEqual(['CN=leaf', 'CN=plain']);
      expect(certs[0].raw.equals(leafDer)).toBe(true);
      expect(certificatesFromPem('no certificate here')).toEqual([]);
    });

    it('refuses a block whose body is not canonical base64, or not a certificate, naming the input', () => {
      const pem = pemOf(plainDer);
      const bad = pem.replace('\n', '\n!');
      expect(() => certificatesFromPem(bad, 'ca.pem')).toThrow(expect.objectContaining({ code: 'ERR_PEM', message: expect.stringMatching(/^ca\.pem: .*not valid base64/) }));
      expect(() => certificatesFromPem(pemOf(Buffer.from([0x30, 0x03, 2, 1, 3])), 'ca.pem')).toThrow(/ca\.pem: not a valid X.509 certificate/);
      expect(() => certificatesFromPem(pem + pemOf(Buffer.from('hello')), 'chain.pem')).toThrow(/chain\.pem certificate 2: not a DER certificate/);
    });
  });
});
