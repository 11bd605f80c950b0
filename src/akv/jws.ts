/**
 * The vault's key-release response is a compact JWS (RS256) whose header carries the signing
 * certificate chain (x5c, leaf first) and its thumbprints (x5t, x5t#S256). The sidecar trusts the
 * released key only when the signature verifies with x5c[0] (jose's compactVerify), x5c chains to
 * a root we already trust (system roots + configured extras; never a root merely because it is in
 * x5c), every certificate on the path is within its validity period, and the leaf names the vault
 * host we called.
 *
 * A vault signs every release with the same chain, so a chain that verified is remembered by the
 * SHA-256 fingerprint of its DER certificates (with its validity window and the hosts it was
 * checked for): later releases skip the X.509 parsing and the search through the roots, but never
 * the signature check. Signing lives with the vault emulator (src/emulators/akv/release-signer.ts).
 */
import { createHash, webcrypto, type KeyObject, type X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import * as tls from 'node:tls';
import { compactVerify } from 'jose';
import { certificateFromDer, certificatesFromPem } from '../asn1/certificate';
import { SkrError, VerificationError } from '../common/errors';
import { b64url, decodeBase64Strict } from '../common/bytes';

export interface VerifyReleaseJwsOptions {
  /** Host the release request went to, without port (DNS name or IP literal). */
  vaultHost: string;
  /** Extra trusted roots (PEM, one or more certificates each), e.g. the local emulator CA. */
  extraCaPem?: string[];
  now?: Date;
}

export interface ReleaseJwsVerifierOptions {
  /** Extra trusted roots (PEM, one or more certificates each), e.g. the local emulator CA. */
  extraCaPem?: string[];
  /** Clock (tests). */
  now?: () => Date;
  /** Verified chains remembered at once (default 16). */
  maxChains?: number;
}

/** Bounds on attacker-supplied input before any parsing work. */
const MAX_JWS_CHARS = 1024 * 1024;
const MAX_X5C = 10;
const DEFAULT_MAX_CHAINS = 16;

/** When every certificate on a verified path is valid (ms since epoch). */
interface Window {
  from: number;
  to: number;
}

interface VerifiedChain extends Window {
  leaf: X509Certificate;
  leafKey: KeyObject;
  /** The leaf key as jose verifies with it (imported once per chain: jose would import a KeyObject per call). */
  verifyKey: webcrypto.CryptoKey;
  x5t: string;
  x5tS256: string;
  /** Hosts the leaf was checked against (true: it names them). */
  hosts: Map<string, boolean>;
}

function fail(step: string, message: string, cause?: unknown): never {
  throw new VerificationError(step, message, cause);
}

const RS256_KEY = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as const;

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
  systemRoots ??= tls.rootCertificates.flatMap((p) => certificatesFromPem(p, "Node's bundled root"));
  const extra: X509Certificate[] = [];
  for (const pem of extraCaPem ?? []) {
    const certs = certificatesFromPem(pem, 'an extra CA PEM');
    if (certs.length === 0) throw new SkrError('ERR_CONFIG', 'an extra CA PEM contains no certificate');
    extra.push(...certs);
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
function verifyChain(chain: X509Certificate[], roots: X509Certificate[], now: Date): Window {
  const path: X509Certificate[] = [];
  const windowOf = (): Window => ({
    from: Math.max(...path.map((c) => Date.parse(c.validFrom))),
    to: Math.min(...path.map((c) => Date.parse(c.validTo))),
  });
  for (let i = 0; i < chain.length; i++) {
    const c = chain[i];
    // Only certificates on the path count; a stale extra x5c entry past the anchor is ignored.
    checkValidity(c, now, i === 0 ? 'signing certificate' : `x5c[${i}]`);
    path.push(c);
    if (roots.some((r) => r.raw.equals(c.raw))) return windowOf();
    const root = roots.find((r) => issuedBy(c, r));
    if (root) {
      if (!root.ca) fail('jws-chain', `trusted certificate ${subjectLine(root)} is not a CA`);
      checkValidity(root, now, 'trusted root');
      path.push(root);
      return windowOf();
    }
    const parent = chain[i + 1];
    if (!parent) fail('jws-chain', `x5c[${i}] (${subjectLine(c)}) does not chain to a trusted root`);
    if (!issuedBy(c, parent)) fail('jws-chain', `x5c[${i}] (${subjectLine(c)}) is not signed by x5c[${i + 1}] (${subjectLine(parent)})`);
    if (!parent.ca) fail('jws-chain', `x5c[${i + 1}] (${subjectLine(parent)}) is not a CA certificate`);
  }
  return fail('jws-chain', 'x5c is empty');
}

/** Verifies release responses against one set of trusted roots, caching verified chains. */
export class ReleaseJwsVerifier {
  private roots?: X509Certificate[];
  private readonly chains = new Map<string, VerifiedChain>();
  private readonly maxChains: number;

  constructor(private readonly opts: ReleaseJwsVerifierOptions = {}) {
    this.maxChains = opts.maxChains ?? DEFAULT_MAX_CHAINS;
  }

  /** Chains verified and remembered now (tests, diagnostics). */
  get cachedChains(): number {
    return this.chains.size;
  }

  /** Verify a key-release JWS from `vaultHost` (DNS name or IP literal, no port) and return its payload. */
  async verify(jws: string, vaultHost: string): Promise<Record<string, unknown>> {
    const now = this.opts.now?.() ?? new Date();
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
    const ders = x5c.map((entry, i) => {
      const der = typeof entry === 'string' ? decodeBase64Strict(entry) : undefined;
      if (!der || der.length === 0) fail('jws-format', `x5c[${i}] is not base64`);
      return der;
    });
    const fingerprint = ders.reduce((h, d) => h.update(createHash('sha256').update(d).digest()), createHash('sha256')).digest('hex');
    let known = this.chains.get(fingerprint);
    if (known && (now.getTime() < known.from || now.getTime() > known.to)) {
      // Outside the window it was verified for: verify again (and fail with the precise reason).
      this.chains.delete(fingerprint);
      known = undefined;
    }
    const chain = known ? undefined : parseChain(ders);
    const leaf = known?.leaf ?? chain![0];
    for (const [name, value] of [['x5t', known?.x5t ?? thumb('sha1', leaf)], ['x5t#S256', known?.x5tS256 ?? thumb('sha256', leaf)]] as const) {
      const v = header[name];
      if (v !== undefined && v !== value) fail('jws-format', `JWS header ${name} does not match x5c[0]`);
    }
    const payload = segmentJson(p64, 'payload');
    const sig = B64URL_SEGMENT.test(s64) ? decodeBase64Strict(s64) : undefined;
    if (!sig || sig.length === 0) fail('jws-format', 'JWS signature is not base64url');

    const leafKey = known?.leafKey ?? leaf.publicKey;
    if (leafKey.asymmetricKeyType !== 'rsa') {
      fail('jws-signature', `signing certificate holds a ${leafKey.asymmetricKeyType ?? 'unknown'} key; RS256 needs RSA`);
    }
    let verifyKey = known?.verifyKey;
    try {
      verifyKey ??= await webcrypto.subtle.importKey('spki', leafKey.export({ type: 'spki', format: 'der' }), RS256_KEY, false, ['verify']);
      await compactVerify(jws, verifyKey, { algorithms: ['RS256'] });
    } catch (e) {
      fail('jws-signature', `JWS signature does not verify with x5c[0] (${subjectLine(leaf)})`, e);
    }
    if (!known) {
      const window = verifyChain(chain!, (this.roots ??= trustedRoots(this.opts.extraCaPem)), now);
      known = { ...window, leaf, leafKey, verifyKey, x5t: thumb('sha1', leaf), x5tS256: thumb('sha256', leaf), hosts: new Map() };
      this.remember(fingerprint, known);
    }
    const host = normalHost(vaultHost);
    let named = known.hosts.get(host);
    if (named === undefined) {
      named = namesHost(known.leaf, host);
      if (known.hosts.size < 64) known.hosts.set(host, named);
    }
    if (!named) fail('jws-host', `signing certificate ${subjectLine(known.leaf)} (SAN ${known.leaf.subjectAltName ?? 'none'}) does not name the vault host ${host}`);
    return payload;
  }

  private remember(fingerprint: string, chain: VerifiedChain): void {
    this.chains.set(fingerprint, chain);
    while (this.chains.size > this.maxChains) this.chains.delete(this.chains.keys().next().value as string);
  }
}

function parseChain(ders: Buffer[]): X509Certificate[] {
  return ders.map((der, i) => {
    try {
      return certificateFromDer(der, `x5c[${i}]`);
    } catch (e) {
      return fail('jws-format', `x5c[${i}] is not an X.509 certificate`, e);
    }
  });
}

function thumb(alg: 'sha1' | 'sha256', c: X509Certificate): string {
  return b64url(createHash(alg).update(c.raw).digest());
}

function normalHost(vaultHost: string): string {
  const host = vaultHost.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '').toLowerCase();
  if (host.length === 0) fail('jws-host', 'vault host is empty');
  return host;
}

function namesHost(leaf: X509Certificate, host: string): boolean {
  // checkHost with subject 'never': only SAN dNSName entries count, as in modern TLS.
  return isIP(host) ? leaf.checkIP(host) !== undefined : leaf.checkHost(host, { subject: 'never' }) !== undefined;
}

/** Verify a key-release JWS once (no chain cache across calls); see the module comment for what is checked. */
export function verifyReleaseJws(jws: string, opts: VerifyReleaseJwsOptions): Promise<Record<string, unknown>> {
  const at = opts.now;
  return new ReleaseJwsVerifier({ ...(opts.extraCaPem ? { extraCaPem: opts.extraCaPem } : {}), ...(at ? { now: () => at } : {}) }).verify(jws, opts.vaultHost);
}
