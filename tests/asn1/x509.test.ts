import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeOid, parseDer } from '../../src/asn1/der';
import {
  algorithmIdentifier,
  authorityKeyIdentifier,
  basicConstraints,
  buildCertificate,
  createLocalCa,
  dersOfPem,
  encodeName,
  extKeyUsage,
  issueServerCertificate,
  keyIdentifier,
  keyUsage,
  pemOf,
  rawExtension,
  subjectAltName,
  subjectKeyIdentifier,
  subjectNameOf,
} from '../../src/asn1/x509';
import { describeVectors, vector } from '../helpers/vectors';
import { certificateFromDer, certificatesFromPem } from '../../src/asn1/certificate';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const ec256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const NB = new Date('2024-01-01T00:00:00Z');
const NA = new Date('2049-01-01T00:00:00Z');
const AMD_LIKE = [
  ['OU', 'Engineering'],
  ['C', 'US'],
  ['L', 'Santa Clara'],
  ['ST', 'CA'],
  ['O', 'skr-sidecar SIMULATED (test only)'],
  ['CN', 'ARK-Test'],
] as const;

function opensslText(derBytes: Buffer): string {
  const dir = mkdtempSync(join(tmpdir(), 'x509-'));
  try {
    const f = join(dir, 'c.der');
    writeFileSync(f, derBytes);
    return execFileSync('openssl', ['x509', '-inform', 'DER', '-in', f, '-noout', '-text'], { encoding: 'utf8' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('buildCertificate', () => {
  it('self-signs an RSA-PSS SHA-384 root that Node and openssl accept', () => {
    const derBytes = buildCertificate({
      subject: AMD_LIKE,
      issuer: AMD_LIKE,
      serialNumber: 0x10000n,
      notBefore: NB,
      notAfter: NA,
      subjectPublicKey: rsa.publicKey,
      issuerPrivateKey: rsa.privateKey,
      signatureAlgorithm: 'rsa-pss-sha384',
      extensions: [keyUsage(['keyCertSign', 'cRLSign']), subjectKeyIdentifier(rsa.publicKey), basicConstraints(true)],
    });
    const cert = certificateFromDer(derBytes);
    expect(cert.verify(rsa.publicKey)).toBe(true);
    expect(cert.ca).toBe(true);
    expect(cert.serialNumber).toBe('010000');
    expect(cert.subject).toContain('CN=ARK-Test');
    expect(cert.subject).toContain('O=skr-sidecar SIMULATED (test only)');
    expect(cert.validFrom).toBe('Jan  1 00:00:00 2024 GMT');
    expect(cert.validTo).toBe('Jan  1 00:00:00 2049 GMT');
    const text = opensslText(derBytes);
    expect(text).toContain('Signature Algorithm: rsassaPss');
    expect(text).toContain('Mask Algorithm: mgf1 with sha384');
    expect(text).toContain('Salt Length: 0x30');
    expect(text).toContain('Public Key Algorithm: rsaEncryption');
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    // PEM armour round-trips.
    expect(dersOfPem(pemOf(derBytes))).toEqual([derBytes]);
    expect(certificatesFromPem(pemOf(derBytes))[0].fingerprint256).toBe(cert.fingerprint256);
  });

  it('issues an RSA-PSS chain: root → intermediate → ECDSA leaf', () => {
    const inter = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const rootDer = buildCertificate({
      subject: [['CN', 'root']], issuer: [['CN', 'root']], serialNumber: 1n, notBefore: NB, notAfter: NA,
      subjectPublicKey: rsa.publicKey, issuerPrivateKey: rsa.privateKey, signatureAlgorithm: 'rsa-pss-sha384',
      extensions: [basicConstraints(true)],
    });
    const interDer = buildCertificate({
      subject: [['CN', 'inter']], issuer: subjectNameOf(rootDer), serialNumber: 2n, notBefore: NB, notAfter: NA,
      subjectPublicKey: inter.publicKey, issuerPrivateKey: rsa.privateKey, signatureAlgorithm: 'rsa-pss-sha384',
      extensions: [basicConstraints(true, 0), authorityKeyIdentifier(rsa.publicKey)],
    });
    const leafDer = buildCertificate({
      subject: [['CN', 'leaf']], issuer: [['CN', 'inter']], serialNumber: 0n, notBefore: NB, notAfter: NA,
      subjectPublicKey: ec384.publicKey, issuerPrivateKey: inter.privateKey, signatureAlgorithm: 'rsa-pss-sha384',
    });
    const [root, mid, leaf] = [rootDer, interDer, leafDer].map((d) => certificateFromDer(d));
    expect(root.verify(root.publicKey)).toBe(true);
    expect(mid.verify(root.publicKey)).toBe(true);
    expect(leaf.verify(mid.publicKey)).toBe(true);
    expect(leaf.verify(root.publicKey)).toBe(false);
    expect(mid.checkIssued(root)).toBe(true);
    expect(leaf.checkIssued(mid)).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    expect(opensslText(interDer)).toContain('CA:TRUE, pathlen:0');
  });

  it.each([
    ['ecdsa-sha384', ec384, 'ecdsa-with-SHA384'],
    ['ecdsa-sha256', ec256, 'ecdsa-with-SHA256'],
    ['rsa-sha256', rsa, 'sha256WithRSAEncryption'],
  ] as const)('signs with %s', (alg, keys, name) => {
    const derBytes = buildCertificate({
      subject: [['CN', 'x']], issuer: [['CN', 'x']], serialNumber: 5n, notBefore: NB, notAfter: NA,
      subjectPublicKey: keys.publicKey, issuerPrivateKey: keys.privateKey, signatureAlgorithm: alg,
    });
    expect(certificateFromDer(derBytes).verify(keys.publicKey)).toBe(true);
    expect(opensslText(derBytes)).toContain(`Signature Algorithm: ${name}`);
  });

  it('writes SAN, EKU and CA flags that read back', () => {
    const derBytes = buildCertificate({
      subject: [['CN', 'server']], issuer: [['CN', 'ca']], serialNumber: 7n, notBefore: NB, notAfter: NA,
      subjectPublicKey: ec256.publicKey, issuerPrivateKey: ec384.privateKey, signatureAlgorithm: 'ecdsa-sha384',
      extensions: [
        basicConstraints(false),
        keyUsage(['digitalSignature', 'keyEncipherment']),
        extKeyUsage(['serverAuth', '1.3.6.1.5.5.7.3.2']),
        subjectAltName({ dns: ['localhost', 'skr.test'], ip: ['127.0.0.1', '::1', '::ffff:10.0.0.1'] }),
      ],
    });
    const cert = certificateFromDer(derBytes);
    expect(cert.verify(ec384.publicKey)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkHost('skr.test')).toBe('skr.test');
    expect(cert.checkHost('other.test')).toBeUndefined();
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkIP('::1')).toBe('::1');
    expect(cert.subjectAltName).toBe('DNS:localhost, DNS:skr.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:0:0:0:0:0:FFFF:A00:1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    expect(opensslText(derBytes)).toMatch(/Key Usage: critical\s+Digital Signature, Key Encipherment/);
  });

  it('encodes a raw extension verbatim and omits DEFAULT FALSE criticality', () => {
    const derBytes = buildCertificate({
      subject: [['CN', 'x']], issuer: [['CN', 'x']], serialNumber: 1n, notBefore: NB, notAfter: NA,
      subjectPublicKey: ec384.publicKey, issuerPrivateKey: ec384.privateKey, signatureAlgorithm: 'ecdsa-sha384',
      extensions: [rawExtension('1.3.6.1.4.1.3704.1.3.1', false, Buffer.from('020103', 'hex')), rawExtension('1.2.3.4', true, Buffer.from('0500', 'hex'))],
    });
    const tbs = parseDer(derBytes).children![0];
    const exts = tbs.children!.find((c) => c.tag === 0xa3)!.children![0].children!;
    expect(decodeOid(exts[0].children![0].value)).toBe('1.3.6.1.4.1.3704.1.3.1');
    expect(exts[0].children!.length).toBe(2);
    expect(exts[0].children![1].value).toEqual(Buffer.from('020103', 'hex'));
    expect(exts[1].children![1].raw).toEqual(Buffer.from('0101ff', 'hex'));
  });

  it('keyIdentifier is SHA-1 of the subjectPublicKey bits and SKI/AKI carry it', () => {
    const id = keyIdentifier(rsa.publicKey);
    expect(id.length).toBe(20);
    expect(subjectKeyIdentifier(rsa.publicKey).value).toEqual(Buffer.concat([Buffer.from([0x04, 20]), id]));
    expect(authorityKeyIdentifier(rsa.publicKey).value).toEqual(Buffer.concat([Buffer.from([0x30, 22, 0x80, 20]), id]));
  });

  it('refuses inputs that cannot be right', () => {
    const base = {
      subject: [['CN', 'x']] as const, issuer: [['CN', 'x']] as const, serialNumber: 1n, notBefore: NB, notAfter: NA,
      subjectPublicKey: ec384.publicKey, issuerPrivateKey: ec384.privateKey, signatureAlgorithm: 'ecdsa-sha384' as const,
    };
    const code = expect.objectContaining({ code: 'ERR_X509' });
    expect(() => buildCertificate({ ...base, signatureAlgorithm: 'rsa-pss-sha384' })).toThrow(code);
    expect(() => buildCertificate({ ...base, issuerPrivateKey: rsa.privateKey })).toThrow(code);
    expect(() => buildCertificate({ ...base, issuerPrivateKey: ec384.publicKey })).toThrow(code);
    expect(() => buildCertificate({ ...base, notBefore: NA, notAfter: NB })).toThrow(code);
    expect(() => buildCertificate({ ...base, serialNumber: -1n })).toThrow(code);
    expect(() => buildCertificate({ ...base, subject: [['XX', 'y']] })).toThrow(code);
    expect(() => buildCertificate({ ...base, subject: [['C', 'USA']] })).toThrow(code);
    expect(() => buildCertificate({ ...base, extensions: [basicConstraints(true), basicConstraints(false)] })).toThrow(code);
    expect(() => subjectAltName({ ip: ['1.2.3'] })).toThrow(code);
    expect(() => subjectAltName({})).toThrow(code);
    expect(() => basicConstraints(false, 1)).toThrow(code);
  });
});

describe('local HTTPS CA helpers', () => {
  it('issues a server certificate for localhost and 127.0.0.1 that chains to the CA', () => {
    const ca = createLocalCa();
    const server = issueServerCertificate(ca);
    const caCert = certificatesFromPem(ca.certPem)[0];
    const cert = certificatesFromPem(server.certPem)[0];
    expect(caCert.ca).toBe(true);
    expect(caCert.verify(ca.publicKey)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkPrivateKey(server.privateKey)).toBe(true);
    expect(server.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });
});

describeVectors('AMD encodings', () => {
  it('the RSA-PSS AlgorithmIdentifier is byte-identical to the one in AMD\'s ARK', () => {
    const [ask, ark] = dersOfPem(vector('amd-roots/ask_ark_milan.pem').toString());
    for (const c of [ask, ark]) {
      const top = parseDer(c).children!;
      expect(top[1].raw).toEqual(algorithmIdentifier('rsa-pss-sha384'));
      expect(top[0].children![2].raw).toEqual(algorithmIdentifier('rsa-pss-sha384'));
    }
  });

  it('names encode like AMD\'s (PrintableString country, UTF8String elsewhere)', () => {
    const [, ark] = dersOfPem(vector('amd-roots/ask_ark_milan.pem').toString());
    const amd = [['OU', 'Engineering'], ['C', 'US'], ['L', 'Santa Clara'], ['ST', 'CA'], ['O', 'Advanced Micro Devices'], ['CN', 'ARK-Milan']] as const;
    expect(encodeName(amd)).toEqual(subjectNameOf(ark));
  });
});
