/**
 * The emulator's RS256 token-signing key and its self-signed certificate, published as MAA publishes
 * its own: `/certs` entries hold `kid`, `kty` and `x5c` only (no `n`/`e`), and the self-signed
 * certificate carries, in extension 1.3.6.1.4.1.311.105.1, SGX quote collateral whose bytes include
 * PEM certificate text (on MAA, the Intel PCK chain of the enclave holding the key). A verifier that
 * builds the certificate from those bytes loosely gets the embedded certificate instead, as it would
 * against Azure. With a state directory the key survives restarts (file mode 0600), so tokens issued
 * before a restart still verify; the certificate is re-issued for the same key when it is missing,
 * does not match, lacks the collateral extension, or is about to expire. The `kid` depends on the key only.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, KeyObject, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { certificatesFromPem } from '../../asn1/certificate';
import { der } from '../../asn1/der';
import { basicConstraints, buildCertificate, keyUsage, pemOf, rawExtension, subjectKeyIdentifier } from '../../asn1/x509';
import { ConfigError } from '../../common/errors';

export const SIGNING_KEY_FILE = 'maa-signing-key.pem';
export const SIGNING_CERT_FILE = 'maa-signing-cert.pem';
const DAY_MS = 86_400_000;
const CERT_DAYS = 365;

export interface MaaSigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Standard base64 of the RFC 7638 thumbprint (44 characters, the shape of MAA's kids). */
  kid: string;
  certDer: Buffer;
  certPem: string;
  /** The public JWK as /certs publishes it: MAA's three members, in MAA's order. */
  jwk: MaaJwk;
}

/** A `/certs` entry exactly as MAA serves one. */
export interface MaaJwk {
  x5c: string[];
  kid: string;
  kty: 'RSA';
}

/** The extension in which MAA's signing certificates carry the SGX quote of the enclave holding the key. */
export const MAA_QUOTE_EXTENSION_OID = '1.3.6.1.4.1.311.105.1';
const QUOTE_EXTENSION_DER = der.oid(MAA_QUOTE_EXTENSION_OID);

/**
 * A stand-in for MAA's SGX quote collateral: binary header bytes, then a PEM chain (throwaway EC
 * certificates named like Intel's PCK leaf and CA), then a NUL, as in the quote's certification data.
 * As in the real ones, the second PEM block starts a line: that is the one a PEM-first parser finds.
 */
function quoteCollateral(now: Date): Buffer {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = (cn: string) =>
    pemOf(
      buildCertificate({
        subject: [['CN', cn]],
        issuer: [['CN', cn]],
        serialNumber: 1n,
        notBefore: new Date(now.getTime() - DAY_MS),
        notAfter: new Date(now.getTime() + CERT_DAYS * DAY_MS),
        subjectPublicKey: publicKey,
        issuerPrivateKey: privateKey,
        signatureAlgorithm: 'ecdsa-sha256',
      }),
    );
  const chain = pem('SGX PCK Certificate stand-in (skr-sidecar MAA emulator, test only)') + pem('SGX PCK Processor CA stand-in (skr-sidecar MAA emulator, test only)');
  const header = Buffer.from([0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00]);
  return Buffer.concat([header, Buffer.from(chain, 'latin1'), Buffer.from([0])]);
}

function rsaParts(pub: KeyObject): { n: string; e: string } {
  const j = pub.export({ format: 'jwk' });
  if (j.kty !== 'RSA' || typeof j.n !== 'string' || typeof j.e !== 'string') throw new ConfigError('MAA signing key is not an RSA key');
  return { n: j.n, e: j.e };
}

/** RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace. */
export function rsaThumbprint(pub: KeyObject): Buffer {
  const { n, e } = rsaParts(pub);
  return createHash('sha256').update(JSON.stringify({ e, kty: 'RSA', n })).digest();
}

function selfSign(privateKey: KeyObject, publicKey: KeyObject, now: Date): Buffer {
  const serial = randomBytes(8);
  serial[0] &= 0x7f;
  const name = [
    ['O', 'skr-sidecar local emulators (test only)'],
    ['CN', 'skr-sidecar MAA emulator token signing'],
  ] as const;
  return buildCertificate({
    subject: name,
    issuer: name,
    serialNumber: BigInt('0x' + serial.toString('hex')) + 1n,
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + CERT_DAYS * DAY_MS),
    subjectPublicKey: publicKey,
    issuerPrivateKey: privateKey,
    signatureAlgorithm: 'rsa-sha256',
    extensions: [
      basicConstraints(false),
      keyUsage(['digitalSignature']),
      subjectKeyIdentifier(publicKey),
      rawExtension(MAA_QUOTE_EXTENSION_OID, false, quoteCollateral(now)),
    ],
  });
}

function certUsable(pem: string, publicKey: KeyObject, now: Date): Buffer | undefined {
  try {
    const [c] = certificatesFromPem(pem, 'MAA emulator signing certificate');
    if (!c || !c.publicKey.equals(publicKey) || !c.raw.includes(QUOTE_EXTENSION_DER)) return undefined;
    if (new Date(c.validTo).getTime() < now.getTime() + DAY_MS || new Date(c.validFrom).getTime() > now.getTime()) return undefined;
    return c.raw;
  } catch {
    return undefined;
  }
}

function writePrivate(file: string, data: string, mode: number): void {
  // Write then rename, so a crash never leaves a half-written key behind.
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data, { mode });
  fs.renameSync(tmp, file);
}

function toSigningKey(privateKey: KeyObject, certDer: Buffer): MaaSigningKey {
  const publicKey = createPublicKey(privateKey);
  const kid = rsaThumbprint(publicKey).toString('base64');
  return {
    privateKey,
    publicKey,
    kid,
    certDer,
    certPem: pemOf(certDer),
    jwk: { x5c: [certDer.toString('base64')], kid, kty: 'RSA' },
  };
}

/** A signing key in memory only (no state directory): tokens stop verifying when the process ends. */
export function createSigningKey(now: Date = new Date()): MaaSigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return toSigningKey(privateKey, selfSign(privateKey, publicKey, now));
}

/** Load the key (and certificate) from `stateDir`, creating what is missing. */
export function loadOrCreateSigningKey(stateDir: string, now: Date = new Date()): MaaSigningKey {
  const keyPath = path.join(stateDir, SIGNING_KEY_FILE);
  const certPath = path.join(stateDir, SIGNING_CERT_FILE);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  let privateKey: KeyObject;
  if (fs.existsSync(keyPath)) {
    try {
      privateKey = createPrivateKey(fs.readFileSync(keyPath, 'utf8'));
    } catch (e) {
      throw new ConfigError(`MAA emulator signing key ${keyPath} does not parse`, e);
    }
    if (privateKey.asymmetricKeyType !== 'rsa') throw new ConfigError(`MAA emulator signing key ${keyPath} is not an RSA key`);
    fs.chmodSync(keyPath, 0o600);
  } else {
    privateKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    writePrivate(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600);
  }
  const publicKey = createPublicKey(privateKey);
  let certDer = fs.existsSync(certPath) ? certUsable(fs.readFileSync(certPath, 'utf8'), publicKey, now) : undefined;
  if (!certDer) {
    certDer = selfSign(privateKey, publicKey, now);
    writePrivate(certPath, pemOf(certDer), 0o644);
  }
  return toSigningKey(privateKey, certDer);
}
