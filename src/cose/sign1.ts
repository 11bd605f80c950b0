/**
 * COSE_Sign1 (RFC 9052 §4.2): parse, verify and sign. The signature covers
 * Sig_structure = ["Signature1", protected bstr, external_aad, payload], so verification always uses
 * the protected header bytes exactly as received, never a re-encoding of the decoded map.
 */
import { createPublicKey, KeyObject, sign as nodeSign, verify as nodeVerify, X509Certificate, constants } from 'node:crypto';
import { InvalidInputError, VerificationError } from '../common/errors';
import { CborMap, CborTag, CborValue, decodeCbor, encodeCbor } from './cbor';

export const COSE_SIGN1_TAG = 18;

/** COSE header labels (RFC 9052 §3.1, RFC 9360). */
export const HeaderLabel = {
  alg: 1,
  crit: 2,
  contentType: 3,
  kid: 4,
  x5chain: 33,
  x5t: 34,
} as const;

/** COSE algorithm identifiers this module signs and verifies. */
export const CoseAlg = {
  ES256: -7,
  ES384: -35,
  ES512: -36,
  PS256: -37,
  PS384: -38,
  PS512: -39,
} as const;

interface AlgSpec {
  name: string;
  hash: 'sha256' | 'sha384' | 'sha512';
  kind: 'pss' | 'ecdsa';
  /** PSS salt length = hash length (RFC 8230 §2). */
  saltLength?: number;
  /** ECDSA curve and the byte length of one coordinate (signature is r||s of twice that). */
  curve?: string;
  coordLen?: number;
}

const ALGS: ReadonlyMap<number, AlgSpec> = new Map<number, AlgSpec>([
  [CoseAlg.ES256, { name: 'ES256', hash: 'sha256', kind: 'ecdsa', curve: 'prime256v1', coordLen: 32 }],
  [CoseAlg.ES384, { name: 'ES384', hash: 'sha384', kind: 'ecdsa', curve: 'secp384r1', coordLen: 48 }],
  [CoseAlg.ES512, { name: 'ES512', hash: 'sha512', kind: 'ecdsa', curve: 'secp521r1', coordLen: 66 }],
  [CoseAlg.PS256, { name: 'PS256', hash: 'sha256', kind: 'pss', saltLength: 32 }],
  [CoseAlg.PS384, { name: 'PS384', hash: 'sha384', kind: 'pss', saltLength: 48 }],
  [CoseAlg.PS512, { name: 'PS512', hash: 'sha512', kind: 'pss', saltLength: 64 }],
]);

export interface Sign1 {
  /** The protected header bucket exactly as encoded (the bstr contents). */
  protectedRaw: Buffer;
  protectedHeader: CborMap;
  unprotected: CborMap;
  /** null when the payload is detached. */
  payload: Buffer | null;
  signature: Buffer;
  /** COSE alg from the protected header. */
  alg: number;
  contentType?: string | number;
  /** DER certificates from label 33 (leaf first); empty when absent. */
  x5chain: Buffer[];
  iss?: string;
  feed?: string;
  /** Whether the message carried CBOR tag 18. */
  tagged: boolean;
}

export class CoseError extends InvalidInputError {
  constructor(message: string, cause?: unknown) {
    super('ERR_COSE', message, cause);
  }
}

export class CoseAlgError extends InvalidInputError {
  constructor(message: string) {
    super('ERR_COSE_ALG', message);
  }
}

function algSpec(alg: number): AlgSpec {
  const spec = ALGS.get(alg);
  if (!spec) throw new CoseAlgError(`unsupported COSE algorithm ${alg}`);
  return spec;
}

export function coseAlgName(alg: number): string {
  return algSpec(alg).name;
}

/** Parse a tagged (18) or untagged COSE_Sign1 message. Structural problems throw CoseError. */
export function parseSign1(bytes: Uint8Array): Sign1 {
  let top: CborValue;
  try {
    top = decodeCbor(bytes);
  } catch (e) {
    throw new CoseError(`COSE_Sign1 is not well-formed CBOR: ${(e as Error).message}`, e);
  }
  let tagged = false;
  if (top instanceof CborTag) {
    if (top.tag !== COSE_SIGN1_TAG) throw new CoseError(`expected CBOR tag 18 (COSE_Sign1), got tag ${top.tag.toString()}`);
    tagged = true;
    top = top.value;
  }
  if (!Array.isArray(top) || top.length !== 4) throw new CoseError('COSE_Sign1 must be an array of 4 items');
  const [prot, unprot, payload, signature] = top;
  if (!Buffer.isBuffer(prot)) throw new CoseError('COSE_Sign1 protected header must be a byte string');
  if (!(unprot instanceof Map)) throw new CoseError('COSE_Sign1 unprotected header must be a map');
  if (payload !== null && !Buffer.isBuffer(payload)) throw new CoseError('COSE_Sign1 payload must be a byte string or nil');
  if (!Buffer.isBuffer(signature)) throw new CoseError('COSE_Sign1 signature must be a byte string');

  let protectedHeader: CborMap;
  if (prot.length === 0) protectedHeader = new Map();
  else {
    let ph: CborValue;
    try {
      ph = decodeCbor(prot);
    } catch (e) {
      throw new CoseError(`protected header is not well-formed CBOR: ${(e as Error).message}`, e);
    }
    if (!(ph instanceof Map)) throw new CoseError('protected header must encode a map');
    protectedHeader = ph;
  }
  for (const k of protectedHeader.keys()) {
    if (unprot.has(k)) throw new CoseError(`header label ${JSON.stringify(k)} appears in both protected and unprotected buckets`);
  }
  // We understand no critical extensions beyond the labels parsed here, so any crit list fails closed.
  if (protectedHeader.has(HeaderLabel.crit)) throw new CoseError('critical header parameters (label 2) are not supported');

  const alg = protectedHeader.get(HeaderLabel.alg);
  if (typeof alg !== 'number' || !Number.isInteger(alg)) throw new CoseError('protected header lacks an integer alg (label 1)');

  const ct = protectedHeader.get(HeaderLabel.contentType) ?? unprot.get(HeaderLabel.contentType);
  if (ct !== undefined && typeof ct !== 'string' && typeof ct !== 'number') throw new CoseError('content type (label 3) must be text or uint');

  const x5 = protectedHeader.get(HeaderLabel.x5chain) ?? unprot.get(HeaderLabel.x5chain);
  let x5chain: Buffer[] = [];
  if (Buffer.isBuffer(x5)) x5chain = [x5];
  else if (Array.isArray(x5)) {
    if (x5.length === 0 || !x5.every((c): c is Buffer => Buffer.isBuffer(c))) {
      throw new CoseError('x5chain (label 33) must be a byte string or a non-empty array of byte strings');
    }
    x5chain = x5;
  } else if (x5 !== undefined) throw new CoseError('x5chain (label 33) must be a byte string or an array of byte strings');

  const iss = protectedHeader.get('iss');
  if (iss !== undefined && typeof iss !== 'string') throw new CoseError('"iss" header must be a text string');
  const feed = protectedHeader.get('feed');
  if (feed !== undefined && typeof feed !== 'string') throw new CoseError('"feed" header must be a text string');

  const out: Sign1 = { protectedRaw: prot, protectedHeader, unprotected: unprot, payload, signature, alg, x5chain, tagged };
  if (ct !== undefined) out.contentType = ct;
  if (iss !== undefined) out.iss = iss;
  if (feed !== undefined) out.feed = feed;
  return out;
}

/** Sig_structure for COSE_Sign1 with the given (possibly detached) payload. */
export function sigStructure(protectedRaw: Uint8Array, payload: Uint8Array, externalAad: Uint8Array = Buffer.alloc(0)): Buffer {
  return encodeCbor(['Signature1', Buffer.from(protectedRaw), Buffer.from(externalAad), Buffer.from(payload)]);
}

export type VerifyKey = KeyObject | X509Certificate;

function toPublicKey(key: VerifyKey): KeyObject {
  return key instanceof X509Certificate ? key.publicKey : key.type === 'private' ? createPublicKey(key) : key;
}

function checkKeyFits(spec: AlgSpec, key: KeyObject): void {
  const t = key.asymmetricKeyType;
  if (spec.kind === 'pss') {
    if (t !== 'rsa' && t !== 'rsa-pss') throw new CoseAlgError(`${spec.name} needs an RSA key, got ${t ?? 'unknown'}`);
  } else {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (t !== 'ec' || curve !== spec.curve) throw new CoseAlgError(`${spec.name} needs an EC ${spec.curve} key, got ${t ?? 'unknown'} ${curve ?? ''}`.trim());
  }
}

/**
 * Verify a COSE_Sign1 signature. Throws VerificationError('cose-signature') when it does not verify,
 * CoseAlgError for an unsupported algorithm or a key that does not fit it, CoseError when the payload
 * is detached and none was supplied.
 */
export function verifySign1(msg: Sign1 | Uint8Array, key: VerifyKey, opts: { externalAad?: Uint8Array; detachedPayload?: Uint8Array } = {}): void {
  const m = msg instanceof Uint8Array ? parseSign1(msg) : msg;
  const spec = algSpec(m.alg);
  const pub = toPublicKey(key);
  checkKeyFits(spec, pub);
  const payload = m.payload ?? opts.detachedPayload;
  if (payload === undefined) throw new CoseError('payload is detached and none was supplied');
  const data = sigStructure(m.protectedRaw, payload, opts.externalAad);
  let ok: boolean;
  if (spec.kind === 'pss') {
    ok = nodeVerify(spec.hash, data, { key: pub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: spec.saltLength }, m.signature);
  } else {
    // COSE ECDSA signatures are fixed-length r||s (RFC 9053 §2.1), not DER.
    if (m.signature.length !== 2 * (spec.coordLen as number)) {
      throw new VerificationError('cose-signature', `${spec.name} signature must be ${2 * (spec.coordLen as number)} bytes, got ${m.signature.length}`);
    }
    ok = nodeVerify(spec.hash, data, { key: pub, dsaEncoding: 'ieee-p1363' }, m.signature);
  }
  if (!ok) throw new VerificationError('cose-signature', `COSE_Sign1 ${spec.name} signature does not verify`);
}

export interface SignSign1Options {
  payload: Uint8Array;
  alg: number;
  privateKey: KeyObject;
  /** DER certificates, leaf first; encoded as a bstr when one, an array otherwise. */
  x5chain?: Uint8Array[];
  contentType?: string | number;
  iss?: string;
  feed?: string;
  /** Further protected header entries, appended after the ones above. */
  protectedExtra?: CborMap;
  unprotected?: CborMap;
}

/** Build and sign a tagged COSE_Sign1. */
export function signSign1(o: SignSign1Options): Buffer {
  const spec = algSpec(o.alg);
  if (o.privateKey.type !== 'private') throw new CoseAlgError('signSign1 needs a private key');
  checkKeyFits(spec, createPublicKey(o.privateKey));
  const ph: CborMap = new Map<string | number, CborValue>([[HeaderLabel.alg, o.alg]]);
  if (o.contentType !== undefined) ph.set(HeaderLabel.contentType, o.contentType);
  if (o.x5chain !== undefined && o.x5chain.length > 0) {
    const certs = o.x5chain.map((c) => Buffer.from(c));
    ph.set(HeaderLabel.x5chain, certs.length === 1 ? certs[0] : certs);
  }
  if (o.iss !== undefined) ph.set('iss', o.iss);
  if (o.feed !== undefined) ph.set('feed', o.feed);
  for (const [k, v] of o.protectedExtra ?? []) {
    if (ph.has(k)) throw new CoseError(`protected header label ${JSON.stringify(k)} given twice`);
    ph.set(k, v);
  }
  const unprotected = o.unprotected ?? new Map();
  for (const k of unprotected.keys()) if (ph.has(k)) throw new CoseError(`header label ${JSON.stringify(k)} in both buckets`);
  const protectedRaw = encodeCbor(ph);
  const payload = Buffer.from(o.payload);
  const data = sigStructure(protectedRaw, payload);
  const signature =
    spec.kind === 'pss'
      ? nodeSign(spec.hash, data, { key: o.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: spec.saltLength })
      : nodeSign(spec.hash, data, { key: o.privateKey, dsaEncoding: 'ieee-p1363' });
  return encodeCbor(new CborTag(COSE_SIGN1_TAG, [protectedRaw, unprotected, payload, signature]));
}
