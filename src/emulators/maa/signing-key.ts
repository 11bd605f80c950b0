/**
 * The emulator's RS256 token-signing key and its self-signed certificate (real MAA publishes
 * self-signed certificates in the `x5c` of its JWKS). With a state directory the key survives restarts
 * (file mode 0600), so tokens issued before a restart still verify; the certificate is re-issued for the
 * same key when it is missing, does not match, or is about to expire. The `kid` depends on the key only.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, KeyObject, randomBytes, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { basicConstraints, buildCertificate, keyUsage, pemOf, subjectKeyIdentifier } from '../../asn1/x509';
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
  /** The public JWK as /certs publishes it. */
  jwk: { kty: 'RSA'; kid: string; use: 'sig'; alg: 'RS256'; n: string; e: string; x5c: string[] };
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
    extensions: [basicConstraints(false), keyUsage(['digitalSignature']), subjectKeyIdentifier(publicKey)],
  });
}

function certUsable(pem: string, publicKey: KeyObject, now: Date): Buffer | undefined {
  try {
    const c = new X509Certificate(pem);
    if (!c.publicKey.equals(publicKey)) return undefined;
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
    jwk: { kty: 'RSA', kid, use: 'sig', alg: 'RS256', ...rsaParts(publicKey), x5c: [certDer.toString('base64')] },
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
