/**
 * UVM endorsement (the ACI `reference-info-base64`): a COSE_Sign1 from Microsoft's ContainerPlat
 * signer whose JSON payload names the launch measurement of the utility VM it endorses.
 *
 * What verifyUvmEndorsement checks, in order (real endorsements carry the whole chain, root included):
 *  1. structure: tag-18 COSE_Sign1, alg present, content type application/json, a non-empty x5chain
 *     of parseable DER certificates, x5t (label 34) matching the leaf when present      → 'cose-format'
 *  2. the COSE signature with the public key of x5chain[0]                                → 'cose-signature'
 *  3. each certificate is signed by the next, names chain (checkIssued), issuers are CAs,
 *     and, only when `now` is given, every certificate is valid at `now`                  → 'uvm-chain'
 *     (real ContainerPlat leaves expire after a year while endorsements stay in use, so
 *     validity is the caller's choice, not a default.)
 *  4. the trust anchor: the last certificate must be self-signed (its signature verified with its
 *     own key) and its SHA-256 DER fingerprint pinned. If the chain stops below the root, the root
 *     certificate must be supplied in `rootCertificates`, be pinned, and verify the last certificate;
 *     a fingerprint alone cannot verify a signature, so that case fails closed without it.   → 'uvm-root'
 *  5. the did:x509 `iss`: version 0, its CA fingerprint equals the hash of that pinned root,
 *     and its policies (only `eku` is supported; others fail closed) hold for the leaf.   → 'uvm-root'
 *  6. payload (read only after 2-5 pass): JSON object with a 96-hex launch measurement and a decimal guest SVN string → 'uvm-payload'
 */
import { createHash, KeyObject, X509Certificate } from 'node:crypto';
import { certificateFromDer, certificatesFromPem } from '../asn1/certificate';
import { decodeBase64Strict } from '../common/bytes';
import { SkrError, VerificationError } from '../common/errors';
import { CborTag, CborValue } from './cbor';
import { CoseAlg, HeaderLabel, parseSign1, Sign1, signSign1, verifySign1 } from './sign1';

/** SHA-256 of the DER of `Microsoft Supply Chain RSA Root CA 2022` (PROTOCOLS §4b). */
export const MICROSOFT_UVM_ROOT_SHA256 = '23ffe2b8bdb9a1711515d4cffda04bc7f793d513c76c243f1020507d8669b7db';
export const UVM_FEED = 'ContainerPlat-AMD-UVM';
/** EKU the real ContainerPlat leaf carries and the real `iss` requires. */
export const UVM_SIGNING_EKU = '1.3.6.1.4.1.311.76.59.1.2';
export const LAUNCH_MEASUREMENT_CLAIM = 'x-ms-sevsnpvm-launchmeasurement';
export const GUEST_SVN_CLAIM = 'x-ms-sevsnpvm-guestsvn';

export interface UvmEndorsement {
  sign1: Sign1;
  /** 96 lowercase hex characters (48 bytes). */
  launchMeasurement: string;
  /** The SVN exactly as the payload gives it (a decimal string). */
  guestSvn: string;
  payload: Record<string, unknown>;
}

export interface VerifyUvmOptions {
  /** SHA-256 hex of trusted root DERs (colons, spaces and case ignored). Default: the Microsoft root. */
  trustedRootFingerprints?: string[];
  /** Roots to use when the x5chain stops below its root; each must also be pinned. */
  rootCertificates?: (X509Certificate | Uint8Array | string)[];
  /** When given, every certificate must be valid at this instant. */
  now?: Date;
}

export interface VerifiedUvmEndorsement {
  launchMeasurement: string;
  guestSvn: string;
  /** Subjects (one line each, RDNs joined by ", ") leaf first, ending with the root. */
  chainSubjects: string[];
  rootFingerprint: string;
  iss: string;
  feed?: string;
}

/** Lowercase hex without separators; throws on anything that is not a SHA-256 fingerprint. */
export function normaliseFingerprint(fp: string): string {
  const s = fp.replace(/[:\s]/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(s)) throw new SkrError('ERR_FINGERPRINT', `not a SHA-256 fingerprint: ${JSON.stringify(fp)}`);
  return s;
}

function fail(step: string, message: string, cause?: unknown): never {
  throw new VerificationError(step, message, cause);
}

function toBytes(input: Uint8Array | string): Buffer {
  if (typeof input !== 'string') return Buffer.from(input);
  const b = decodeBase64Strict(input.replace(/\s+/g, ''));
  if (!b || b.length === 0) fail('cose-format', 'UVM endorsement is not valid base64');
  return b;
}

/** Decode the COSE envelope and check its shape, without reading the (untrusted) payload. */
function parseEnvelope(input: Uint8Array | string): Sign1 {
  const bytes = toBytes(input);
  let sign1: Sign1;
  try {
    sign1 = parseSign1(bytes);
  } catch (e) {
    fail('cose-format', `UVM endorsement: ${(e as Error).message}`, e);
  }
  if (!sign1.tagged) fail('cose-format', 'UVM endorsement must carry CBOR tag 18');
  const ct = sign1.contentType;
  if (ct !== undefined && !(typeof ct === 'string' && /^application\/json(\s*;.*)?$/i.test(ct))) {
    fail('cose-format', `UVM endorsement content type must be application/json, got ${JSON.stringify(ct)}`);
  }
  if (sign1.payload === null) fail('cose-format', 'UVM endorsement payload is detached');
  return sign1;
}

function readPayload(sign1: Sign1): UvmEndorsement {
  let payload: unknown;
  try {
    payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(sign1.payload ?? Buffer.alloc(0)));
  } catch (e) {
    fail('uvm-payload', 'UVM endorsement payload is not UTF-8 JSON', e);
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) fail('uvm-payload', 'UVM endorsement payload is not a JSON object');
  const obj = payload as Record<string, unknown>;
  const lm = obj[LAUNCH_MEASUREMENT_CLAIM];
  if (typeof lm !== 'string' || !/^[0-9a-fA-F]{96}$/.test(lm)) fail('uvm-payload', `${LAUNCH_MEASUREMENT_CLAIM} must be 96 hex characters`);
  const svn = obj[GUEST_SVN_CLAIM];
  if (typeof svn !== 'string' || !/^[0-9]+$/.test(svn)) fail('uvm-payload', `${GUEST_SVN_CLAIM} must be a decimal string`);
  return { sign1, launchMeasurement: lm.toLowerCase(), guestSvn: svn, payload: obj };
}

/**
 * Parse (without verifying) a UVM endorsement from COSE bytes or base64 text. Nothing here is
 * trustworthy until verifyUvmEndorsement has passed.
 */
export function parseUvmEndorsement(input: Uint8Array | string): UvmEndorsement {
  return readPayload(parseEnvelope(input));
}

const DID_X509_HEAD = /^did:x509:0:(sha256|sha384|sha512):([A-Za-z0-9_-]+)$/;
const DIGEST_LEN = { sha256: 32, sha384: 48, sha512: 64 } as const;

/**
 * did:x509:0:<alg>:<b64url CA fingerprint>::<type>:<value>[::...] → its parts. Policy values may
 * themselves hold ':' (e.g. `subject:CN:x`), so only `::` separates policies.
 */
export function parseDidX509(did: string): { hash: 'sha256' | 'sha384' | 'sha512'; fingerprint: Buffer; policies: { type: string; value: string }[] } {
  const [head, ...rest] = did.split('::');
  const m = DID_X509_HEAD.exec(head);
  if (!m || rest.length === 0) throw new VerificationError('uvm-root', `iss is not a did:x509 (version 0) identifier with a policy: ${JSON.stringify(did)}`);
  const hash = m[1] as keyof typeof DIGEST_LEN;
  const fingerprint = Buffer.from(m[2], 'base64url');
  if (fingerprint.toString('base64url') !== m[2] || fingerprint.length !== DIGEST_LEN[hash]) {
    throw new VerificationError('uvm-root', `did:x509 CA fingerprint is not a base64url ${hash} digest`);
  }
  const policies = rest.map((p) => {
    const i = p.indexOf(':');
    if (i <= 0 || i === p.length - 1) throw new VerificationError('uvm-root', `did:x509 policy ${JSON.stringify(p)} is not <type>:<value>`);
    return { type: p.slice(0, i), value: p.slice(i + 1) };
  });
  return { hash, fingerprint, policies };
}

function subjectLine(c: X509Certificate): string {
  return c.subject.split('\n').join(', ');
}

/** A supplied root: a certificate, its DER, or PEM text (every certificate in it). */
function toCerts(c: X509Certificate | Uint8Array | string, i: number): X509Certificate[] {
  if (c instanceof X509Certificate) return [c];
  return typeof c === 'string' ? certificatesFromPem(c, `rootCertificates[${i}]`) : [certificateFromDer(c, `rootCertificates[${i}]`)];
}

function extKeyUsage(c: X509Certificate): string[] {
  // Node 20 exposes EKU OIDs as `keyUsage`; newer releases add `extKeyUsage`.
  const x = c as X509Certificate & { extKeyUsage?: string[] };
  return x.extKeyUsage ?? x.keyUsage ?? [];
}

const X5T_HASH: ReadonlyMap<number, string> = new Map([
  [-16, 'sha256'],
  [-43, 'sha384'],
  [-44, 'sha512'],
]);

function checkX5t(value: CborValue, leafDer: Buffer): void {
  if (!Array.isArray(value) || value.length !== 2 || typeof value[0] !== 'number' || !Buffer.isBuffer(value[1])) {
    fail('cose-format', 'x5t (label 34) must be [hash alg, digest]');
  }
  const hash = X5T_HASH.get(value[0] as number);
  if (!hash) fail('cose-format', `x5t hash algorithm ${String(value[0])} is not supported`);
  if (!createHash(hash).update(leafDer).digest().equals(value[1] as Buffer)) {
    fail('cose-format', 'x5t (label 34) does not match the first x5chain certificate');
  }
}

/** Verify a UVM endorsement end to end (see the module comment for exactly what is checked). */
export function verifyUvmEndorsement(input: Uint8Array | string, opts: VerifyUvmOptions = {}): VerifiedUvmEndorsement {
  const pinned = new Set((opts.trustedRootFingerprints ?? [MICROSOFT_UVM_ROOT_SHA256]).map(normaliseFingerprint));
  const sign1 = parseEnvelope(input);

  // 1. structure of the signer material
  if (sign1.x5chain.length === 0) fail('cose-format', 'UVM endorsement has no x5chain (label 33)');
  let chain: X509Certificate[];
  try {
    chain = sign1.x5chain.map((d, i) => certificateFromDer(d, `x5chain[${i}]`));
  } catch (err) {
    fail('cose-format', 'x5chain holds a certificate that does not parse', err);
  }
  const x5t = sign1.protectedHeader.get(HeaderLabel.x5t) ?? sign1.unprotected.get(HeaderLabel.x5t);
  if (x5t !== undefined) checkX5t(x5t, sign1.x5chain[0]);

  // 2. COSE signature with the leaf
  try {
    verifySign1(sign1, chain[0]);
  } catch (err) {
    if (err instanceof VerificationError) throw err;
    fail('cose-format', `UVM endorsement signature cannot be checked: ${(err as Error).message}`, err);
  }

  // 3. chain links
  for (let i = 0; i + 1 < chain.length; i++) {
    const [child, parent] = [chain[i], chain[i + 1]];
    if (!child.checkIssued(parent)) fail('uvm-chain', `certificate ${i} (${subjectLine(child)}) was not issued by ${subjectLine(parent)}`);
    if (!parent.ca) fail('uvm-chain', `issuer ${subjectLine(parent)} is not a CA`);
    if (!child.verify(parent.publicKey)) fail('uvm-chain', `certificate ${i} (${subjectLine(child)}) is not signed by ${subjectLine(parent)}`);
  }
  if (opts.now) {
    const t = opts.now.getTime();
    for (const c of chain) {
      if (t < Date.parse(c.validFrom) || t > Date.parse(c.validTo)) {
        fail('uvm-chain', `certificate ${subjectLine(c)} is not valid at ${opts.now.toISOString()} (${c.validFrom} .. ${c.validTo})`);
      }
    }
  }

  // 4. trust anchor
  const last = chain[chain.length - 1];
  let root: X509Certificate;
  let rootDer: Buffer;
  if (last.checkIssued(last) && last.verify(last.publicKey)) {
    root = last;
    rootDer = sign1.x5chain[sign1.x5chain.length - 1];
  } else {
    const supplied = (opts.rootCertificates ?? []).flatMap(toCerts).find((r) => last.checkIssued(r) && last.verify(r.publicKey));
    if (!supplied) {
      fail('uvm-root', `x5chain stops at ${subjectLine(last)}, below its root, and no supplied root certificate signs it`);
    }
    if (opts.now) {
      const t = opts.now.getTime();
      if (t < Date.parse(supplied.validFrom) || t > Date.parse(supplied.validTo)) fail('uvm-chain', `root ${subjectLine(supplied)} is not valid at ${opts.now.toISOString()}`);
    }
    root = supplied;
    rootDer = root.raw;
  }
  const rootFingerprint = createHash('sha256').update(rootDer).digest('hex');
  if (!pinned.has(rootFingerprint)) fail('uvm-root', `root ${subjectLine(root)} (sha256 ${rootFingerprint}) is not a trusted UVM endorsement root`);

  // 5. did:x509 issuer bound to that root and satisfied by the leaf
  if (sign1.iss === undefined) fail('uvm-root', 'UVM endorsement has no "iss" protected header');
  const did = parseDidX509(sign1.iss);
  if (!createHash(did.hash).update(rootDer).digest().equals(did.fingerprint)) {
    fail('uvm-root', `iss ${sign1.iss} does not name the chain's root ${subjectLine(root)}`);
  }
  for (const p of did.policies) {
    if (p.type !== 'eku') fail('uvm-root', `did:x509 policy "${p.type}" is not supported`);
    if (!extKeyUsage(chain[0]).includes(p.value)) fail('uvm-root', `leaf certificate lacks the EKU ${p.value} that iss requires`);
  }

  // 6. only now is the payload worth reading
  const e = readPayload(sign1);
  const chainSubjects = chain.map(subjectLine);
  if (root !== last) chainSubjects.push(subjectLine(root));
  const out: VerifiedUvmEndorsement = { launchMeasurement: e.launchMeasurement, guestSvn: e.guestSvn, chainSubjects, rootFingerprint, iss: sign1.iss };
  if (sign1.feed !== undefined) out.feed = sign1.feed;
  return out;
}

/** did:x509 issuer for a root certificate and leaf EKU, as real endorsements carry it. */
export function didX509For(rootDer: Uint8Array, eku: string = UVM_SIGNING_EKU): string {
  return `did:x509:0:sha256:${createHash('sha256').update(rootDer).digest('base64url')}::eku:${eku}`;
}

export interface IssueUvmOptions {
  /** 96 hex characters. */
  launchMeasurement: string;
  guestSvn: string | number;
  /** RSA private key of chainDer[0]. */
  signerKey: KeyObject;
  /** DER certificates, leaf first, ending with the root. */
  chainDer: Uint8Array[];
  eku?: string;
  feed?: string;
  /** Seconds since the epoch for the `signingtime` header (default: now). */
  signingTime?: number;
}

/** Issue a COSE_Sign1 UVM endorsement shaped like the real ones (PS384, x5chain, x5t, iss, feed, signingtime). */
export function issueUvmEndorsement(o: IssueUvmOptions): Buffer {
  if (!/^[0-9a-fA-F]{96}$/.test(o.launchMeasurement)) throw new SkrError('ERR_UVM_ISSUE', 'launchMeasurement must be 96 hex characters');
  const svn = String(o.guestSvn);
  if (!/^[0-9]+$/.test(svn)) throw new SkrError('ERR_UVM_ISSUE', 'guestSvn must be a decimal number');
  if (o.chainDer.length === 0) throw new SkrError('ERR_UVM_ISSUE', 'chainDer must hold at least the signer certificate');
  const certs = o.chainDer.map((c) => Buffer.from(c));
  const payload = Buffer.from(JSON.stringify({ [GUEST_SVN_CLAIM]: svn, [LAUNCH_MEASUREMENT_CLAIM]: o.launchMeasurement.toLowerCase() }));
  const signingTime = o.signingTime ?? Math.floor(Date.now() / 1000);
  // Header order follows the real endorsements: alg, content type, x5chain, x5t, iss, feed, signingtime.
  return signSign1({
    payload,
    alg: CoseAlg.PS384,
    privateKey: o.signerKey,
    contentType: 'application/json',
    protectedExtra: new Map<string | number, CborValue>([
      [HeaderLabel.x5chain, certs],
      [HeaderLabel.x5t, [-16, createHash('sha256').update(certs[0]).digest()]],
      ['iss', didX509For(certs[certs.length - 1], o.eku)],
      ['feed', o.feed ?? UVM_FEED],
      ['signingtime', new CborTag(1, signingTime)],
    ]),
  });
}
