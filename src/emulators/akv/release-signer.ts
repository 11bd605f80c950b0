/**
 * The vault emulator's side of the release JWS: RS256 over the payload with the signing
 * certificate chain in x5c (leaf first) and its thumbprints, as Key Vault sends it. Only the
 * emulator (and tests that forge responses) sign; the sidecar only verifies (src/akv/jws.ts).
 */
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { SkrError } from '../../common/errors';
import { b64url } from '../../common/bytes';
import {
  authorityKeyIdentifier,
  basicConstraints,
  buildCertificate,
  keyUsage,
  pemOf,
  subjectAltName,
  subjectKeyIdentifier,
  subjectNameOf,
  type IssuedCertificate,
} from '../../asn1/x509';

export interface ReleaseJwsSigner {
  /** RSA private key of x5cDer[0]. */
  privateKey: KeyObject;
  /** Certificate chain, leaf first. */
  x5cDer: Buffer[];
}

export function signReleaseJws(payload: object, signer: ReleaseJwsSigner): string {
  if (signer.privateKey.asymmetricKeyType !== 'rsa') {
    throw new SkrError('ERR_JWS_SIGNER', `RS256 needs an RSA signing key, got ${signer.privateKey.asymmetricKeyType ?? 'none'}`);
  }
  const leaf = signer.x5cDer[0];
  if (!leaf) throw new SkrError('ERR_JWS_SIGNER', 'x5c needs at least the signing certificate');
  const header = {
    alg: 'RS256',
    x5c: signer.x5cDer.map((d) => Buffer.from(d).toString('base64')),
    x5t: b64url(createHash('sha1').update(leaf).digest()),
    'x5t#S256': b64url(createHash('sha256').update(leaf).digest()),
  };
  const input = `${b64url(Buffer.from(JSON.stringify(header)))}.${b64url(Buffer.from(JSON.stringify(payload)))}`;
  const sig = sign('sha256', Buffer.from(input, 'ascii'), signer.privateKey);
  return `${input}.${b64url(sig)}`;
}

/**
 * An RSA-2048 release-signing certificate issued by `ca` (the vault emulator's equivalent of the
 * vault's signing certificate), with SAN names the sidecar will check against the vault host.
 */
export function createReleaseSigner(
  ca: Pick<IssuedCertificate, 'der' | 'privateKey' | 'publicKey'>,
  names: { dns?: readonly string[]; ip?: readonly string[] },
  opts: { notBefore?: Date; notAfter?: Date } = {},
): ReleaseJwsSigner & { certPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const now = Date.now();
  const serial = randomBytes(8);
  serial[0] &= 0x7f;
  const caKind = ca.privateKey.asymmetricKeyType;
  const der = buildCertificate({
    subject: [['CN', names.dns?.[0] ?? names.ip?.[0] ?? 'key release signer']],
    issuer: subjectNameOf(ca.der),
    serialNumber: BigInt('0x' + serial.toString('hex')) + 1n,
    notBefore: opts.notBefore ?? new Date(now - 86_400_000),
    notAfter: opts.notAfter ?? new Date(now + 30 * 86_400_000),
    subjectPublicKey: publicKey,
    issuerPrivateKey: ca.privateKey,
    signatureAlgorithm: caKind === 'ec' ? 'ecdsa-sha256' : 'rsa-sha256',
    extensions: [
      basicConstraints(false),
      keyUsage(['digitalSignature']),
      subjectAltName({ dns: names.dns ?? [], ip: names.ip ?? [] }),
      subjectKeyIdentifier(publicKey),
      authorityKeyIdentifier(ca.publicKey),
    ],
  });
  return { privateKey, x5cDer: [der, Buffer.from(ca.der)], certPem: pemOf(der) };
}

