/**
 * The vault's key-release response is a compact JWS (RS256) whose header carries the signing
 * certificate chain (x5c, leaf first) and its thumbprints (x5t, x5t#S256). The sidecar trusts the
 * released key only when the signature verifies with x5c[0], x5c chains to a root we already trust
 * (system roots + configured extras; never a root merely because it is in x5c), every certificate
 * is within its validity period, and the leaf names the vault host we called.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import * as tls from 'node:tls';
import { SkrError, VerificationError } from '../common/errors';
import { b64url, decodeBase64Strict } from '../common/bytes';
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
} from '../asn1/x509';

export interface ReleaseJwsSigner {
  /** RSA private key of x5cDer[0]. */
  privateKey: KeyObject;
  /** Certificate chain, leaf first. */
  x5cDer: Buffer[];
}

export interface VerifyReleaseJwsOptions {
  /** Host the release request went to, without port (DNS name or IP literal). */
  vaultHost: string;
  /** Extra trusted roots (PEM, one or more certificates each), e.g. the local emulator CA. */
  extraCaPem?: string[];
  now?: Date;
}

/** Bounds on attacker-supplied input before any parsing work. */
const MAX_JWS_CHARS = 1024 * 1024;
const MAX_X5C = 10;

function fail(step: string, message: string, cause?: unknown): never {
  throw new VerificationError(step, message, cause);
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

const B64URL_SEGMENT = /^[A-Za-z0-9_-]*$/;

function segmentJson(seg: string, what: string): Record<string, unknown> {
  const bytes = B64URL_SEGMENT.test(seg) ? decodeBase64Strict(seg) : undefined;
  if (!bytes) fail('jws-format', `JWS ${what} is not base64url`);
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    fail('jws-format', `JWS ${what} is not JSON`, e);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('jws-format', `JWS ${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

function subjectLine(c: X509Certificate): string {
  return c.subject.replace(/\n/g, ', ');
}

let systemRoots: X509Certificate[] | undefined;

function trustedRoots(extraCaPem: string[] | undefined): X509Certificate[] {
  // Node's bundled Mozilla roots; parsed once per process.
  systemRoots ??= tls.rootCertificates.map((p) => new X509Certificate(p));
  const extra: X509Certificate[] = [];
  for (const pem of extraCaPem ?? []) {
    const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
    if (!blocks) throw new SkrError('ERR_CONFIG', 'an extra CA PEM contains no certificate');
    for (const b of blocks) extra.push(new X509Certificate(b));
  }
  return [...systemRoots, ...extra];
}

function checkValidity(c: X509Certificate, now: Date, what: string): void {
  const t = now.getTime();
  if (t < Date.parse(c.validFrom) || t > Date.parse(c.validTo)) {
    fail('jws-chain', `${what} ${subjectLine(c)} is not valid at ${now.toISOString()} (${c.validFrom} .. ${c.validTo})`);
  }
}

/** `child` names `parent` as issuer and carries its signature. */
function issuedBy(child: X509Certificate, parent: X509Certificate): boolean {
  return child.checkIssued(parent) && child.verify(parent.publicKey);
}

/**
 * Walk from the leaf: stop at the first certificate that is a trusted root itself or is signed by
 * one; otherwise the next x5c entry must be a CA that signed it. Running out of x5c is a failure.
 */
function verifyChain(chain: X509Certificate[], roots: X509Certificate[], now: Date): void {
  for (let i = 0; i < chain.length; i++) {
    const c = chain[i];
    // Only certificates on the path count; a stale extra x5c entry past the anchor is ignored.
    checkValidity(c, now, i === 0 ? 'signing certificate' : `x5c[${i}]`);
    if (roots.some((r) => r.raw.equals(c.raw))) return;
    const root = roots.find((r) => issuedBy(c, r));
    if (root) {
      if (!root.ca) fail('jws-chain', `trusted certificate ${subjectLine(root)} is not a CA`);
      checkValidity(root, now, 'trusted root');
      return;
    }
    const parent = chain[i + 1];
    if (!parent) fail('jws-chain', `x5c[${i}] (${subjectLine(c)}) does not chain to a trusted root`);
    if (!issuedBy(c, parent)) fail('jws-chain', `x5c[${i}] (${subjectLine(c)}) is not signed by x5c[${i + 1}] (${subjectLine(parent)})`);
    if (!parent.ca) fail('jws-chain', `x5c[${i + 1}] (${subjectLine(parent)}) is not a CA certificate`);
  }
}

function checkHostName(leaf: X509Certificate, vaultHost: string): void {
  const host = vaultHost.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '').toLowerCase();
  if (host.length === 0) fail('jws-host', 'vault host is empty');
  // checkHost with subject 'never': only SAN dNSName entries count, as in modern TLS.
  const ok = isIP(host) ? leaf.checkIP(host) !== undefined : leaf.checkHost(host, { subject: 'never' }) !== undefined;
  if (!ok) fail('jws-host', `signing certificate ${subjectLine(leaf)} (SAN ${leaf.subjectAltName ?? 'none'}) does not name the vault host ${host}`);
}

/** Verify a key-release JWS and return its payload; see the module comment for what is checked. */
export function verifyReleaseJws(jws: string, opts: VerifyReleaseJwsOptions): Record<string, unknown> {
  const now = opts.now ?? new Date();
  if (typeof jws !== 'string' || jws.length === 0) fail('jws-format', 'key release response is not a JWS string');
  if (jws.length > MAX_JWS_CHARS) fail('jws-format', `JWS of ${jws.length} characters exceeds ${MAX_JWS_CHARS}`);
  const parts = jws.split('.');
  if (parts.length !== 3) fail('jws-format', `compact JWS has ${parts.length} parts, expected 3`);
  const [h64, p64, s64] = parts;
  const header = segmentJson(h64, 'header');
  if (header.alg !== 'RS256') fail('jws-format', `JWS alg ${JSON.stringify(header.alg)} is not RS256`);
  // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
  if (header.crit !== undefined) fail('jws-format', `JWS has critical header parameters ${JSON.stringify(header.crit)} this verifier does not implement`);
  const x5c = header.x5c;
  if (!Array.isArray(x5c) || x5c.length === 0) fail('jws-format', 'JWS header has no x5c certificate chain');
  if (x5c.length > MAX_X5C) fail('jws-format', `x5c has ${x5c.length} certificates, more than ${MAX_X5C}`);
  const chain = x5c.map((entry, i) => {
    const der = typeof entry === 'string' ? decodeBase64Strict(entry) : undefined;
    if (!der || der.length === 0) fail('jws-format', `x5c[${i}] is not base64`);
    try {
      return new X509Certificate(der);
    } catch (e) {
      return fail('jws-format', `x5c[${i}] is not an X.509 certificate`, e);
    }
  });
  const leaf = chain[0];
  for (const [name, alg] of [['x5t', 'sha1'], ['x5t#S256', 'sha256']] as const) {
    const v = header[name];
    if (v === undefined) continue;
    if (v !== b64url(createHash(alg).update(leaf.raw).digest())) fail('jws-format', `JWS header ${name} does not match x5c[0]`);
  }
  const payload = segmentJson(p64, 'payload');
  const sig = B64URL_SEGMENT.test(s64) ? decodeBase64Strict(s64) : undefined;
  if (!sig || sig.length === 0) fail('jws-format', 'JWS signature is not base64url');

  if (leaf.publicKey.asymmetricKeyType !== 'rsa') {
    fail('jws-signature', `signing certificate holds a ${leaf.publicKey.asymmetricKeyType ?? 'unknown'} key; RS256 needs RSA`);
  }
  if (!verify('sha256', Buffer.from(`${h64}.${p64}`, 'ascii'), leaf.publicKey, sig)) {
    fail('jws-signature', `JWS signature does not verify with x5c[0] (${subjectLine(leaf)})`);
  }
  verifyChain(chain, trustedRoots(opts.extraCaPem), now);
  checkHostName(leaf, opts.vaultHost);
  return payload;
}
