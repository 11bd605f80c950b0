/**
 * The TPM structures this client exchanges: PCR selections, RSA public areas (TPMT_PUBLIC), object
 * Names, TPMS_ATTEST (Certify and Quote) and TPMT_SIGNATURE. Only what the Azure CVM protocol needs.
 */
import { createHash, createPublicKey, KeyObject } from 'node:crypto';
import { HASH_SIZE, TPM_ALG, TPM_GENERATED_VALUE, TPM_ST } from './constants';
import { TpmResponseError } from './errors';
import { Reader, Writer } from './marshal';

export interface PcrSelection {
  hash: number;
  /** PCR indices, ascending. */
  pcrs: number[];
}

/** sizeofSelect 3 covers PCR 0..23, as every PC-client TPM has. */
const SELECT_BYTES = 3;

export function writePcrSelections(w: Writer, sels: readonly PcrSelection[]): Writer {
  w.u32(sels.length);
  for (const s of sels) {
    const mask = Buffer.alloc(SELECT_BYTES);
    for (const p of s.pcrs) {
      if (!Number.isInteger(p) || p < 0 || p >= SELECT_BYTES * 8) throw new RangeError(`PCR index ${p} is out of range 0..23`);
      mask[p >> 3] |= 1 << (p & 7);
    }
    w.u16(s.hash).u8(SELECT_BYTES).bytes(mask);
  }
  return w;
}

export function readPcrSelections(r: Reader, field: string): PcrSelection[] {
  const count = r.u32(`${field}.count`);
  if (count > 16) throw new TpmResponseError(`${field}: ${count} PCR banks is more than any TPM has`);
  const out: PcrSelection[] = [];
  for (let i = 0; i < count; i++) {
    const hash = r.u16(`${field}[${i}].hash`);
    const size = r.u8(`${field}[${i}].sizeofSelect`);
    if (size > 8) throw new TpmResponseError(`${field}[${i}]: sizeofSelect ${size} is larger than 8`);
    const mask = r.bytes(size, `${field}[${i}].pcrSelect`);
    const pcrs: number[] = [];
    for (let b = 0; b < size * 8; b++) if (mask[b >> 3] & (1 << (b & 7))) pcrs.push(b);
    out.push({ hash, pcrs });
  }
  return out;
}

export function pcrSelectionBytes(sels: readonly PcrSelection[]): Buffer {
  return writePcrSelections(new Writer(), sels).build();
}

/** An RSA TPMT_PUBLIC. */
export interface RsaPublicArea {
  type: typeof TPM_ALG.RSA;
  nameAlg: number;
  objectAttributes: number;
  authPolicy: Buffer;
  /** TPMT_SYM_DEF_OBJECT: NULL, or an algorithm with keyBits and mode. */
  symmetric: { algorithm: number; keyBits?: number; mode?: number };
  /** TPMT_RSA_SCHEME: NULL, or a scheme with its hash. */
  scheme: { scheme: number; hashAlg?: number };
  keyBits: number;
  /** 0 means the default 65537. */
  exponent: number;
  /** The modulus (or, in a template, the unique field as given). */
  unique: Buffer;
}

export function marshalPublic(p: RsaPublicArea): Buffer {
  const w = new Writer().u16(p.type).u16(p.nameAlg).u32(p.objectAttributes).tpm2b(p.authPolicy);
  w.u16(p.symmetric.algorithm);
  if (p.symmetric.algorithm !== TPM_ALG.NULL) w.u16(p.symmetric.keyBits ?? 0).u16(p.symmetric.mode ?? TPM_ALG.NULL);
  w.u16(p.scheme.scheme);
  if (p.scheme.scheme !== TPM_ALG.NULL) w.u16(p.scheme.hashAlg ?? TPM_ALG.SHA256);
  return w.u16(p.keyBits).u32(p.exponent).tpm2b(p.unique).build();
}

/** TPM2B_PUBLIC: the size-prefixed TPMT_PUBLIC. */
export function marshalPublic2b(p: RsaPublicArea): Buffer {
  return new Writer().tpm2b(marshalPublic(p)).build();
}

/** Parse a TPMT_PUBLIC (RSA only: every key of this protocol is RSA). */
export function readPublic(r: Reader, field: string): RsaPublicArea {
  const type = r.u16(`${field}.type`);
  if (type !== TPM_ALG.RSA) throw new TpmResponseError(`${field}: key type 0x${type.toString(16)} is not RSA`);
  const nameAlg = r.u16(`${field}.nameAlg`);
  const objectAttributes = r.u32(`${field}.objectAttributes`);
  const authPolicy = r.tpm2b(`${field}.authPolicy`, 64);
  const algorithm = r.u16(`${field}.symmetric`);
  const symmetric: RsaPublicArea['symmetric'] = { algorithm };
  if (algorithm !== TPM_ALG.NULL) {
    symmetric.keyBits = r.u16(`${field}.symmetric.keyBits`);
    symmetric.mode = r.u16(`${field}.symmetric.mode`);
  }
  const schemeAlg = r.u16(`${field}.scheme`);
  const scheme: RsaPublicArea['scheme'] = { scheme: schemeAlg };
  if (schemeAlg !== TPM_ALG.NULL) scheme.hashAlg = r.u16(`${field}.scheme.hashAlg`);
  const keyBits = r.u16(`${field}.keyBits`);
  const exponent = r.u32(`${field}.exponent`);
  const unique = r.tpm2b(`${field}.unique`, 512);
  return { type, nameAlg, objectAttributes, authPolicy, symmetric, scheme, keyBits, exponent, unique };
}

/** Parse a whole TPM2B_PUBLIC (size prefix included), refusing trailing bytes. */
export function parsePublic2b(b: Buffer, what: string): { area: RsaPublicArea; tpmtBytes: Buffer } {
  const r = new Reader(b, what);
  const tpmtBytes = r.tpm2b('publicArea');
  r.end('publicArea');
  const inner = new Reader(tpmtBytes, what);
  const area = readPublic(inner, 'publicArea');
  inner.end('publicArea');
  return { area, tpmtBytes };
}

/** Object Name: nameAlg || H_nameAlg(TPMT_PUBLIC). */
export function objectName(tpmtBytes: Buffer, nameAlg: number): Buffer {
  const h = HASH_SIZE[nameAlg];
  if (!h) throw new TpmResponseError(`nameAlg 0x${nameAlg.toString(16)} is not a supported hash`);
  const prefix = Buffer.alloc(2);
  prefix.writeUInt16BE(nameAlg);
  return Buffer.concat([prefix, createHash(h.name).update(tpmtBytes).digest()]);
}

/** The RSA public key of a public area, as a KeyObject. */
export function rsaKeyOf(p: RsaPublicArea): KeyObject {
  const e = Buffer.alloc(4);
  e.writeUInt32BE(p.exponent === 0 ? 65537 : p.exponent);
  let i = 0;
  while (i < 3 && e[i] === 0) i++;
  return createPublicKey({ key: { kty: 'RSA', n: p.unique.toString('base64url'), e: e.subarray(i).toString('base64url') }, format: 'jwk' });
}

export type Attested =
  | { kind: 'certify'; name: Buffer; qualifiedName: Buffer }
  | { kind: 'quote'; pcrSelect: PcrSelection[]; pcrDigest: Buffer };

/** TPMS_ATTEST for Certify and Quote. */
export interface Attest {
  magic: number;
  type: number;
  qualifiedSigner: Buffer;
  extraData: Buffer;
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
  firmwareVersion: bigint;
  attested: Attested;
}

/** Parse TPMS_ATTEST bytes (no size prefix). Refuses a wrong magic, unknown type or trailing bytes. */
export function parseAttest(b: Buffer, what: string): Attest {
  const r = new Reader(b, what);
  const magic = r.u32('magic');
  if (magic !== TPM_GENERATED_VALUE) throw new TpmResponseError(`${what}: magic 0x${magic.toString(16)} is not TPM_GENERATED_VALUE`);
  const type = r.u16('type');
  const qualifiedSigner = r.tpm2b('qualifiedSigner', 66);
  const extraData = r.tpm2b('extraData', 64);
  const clock = r.u64('clockInfo.clock');
  const resetCount = r.u32('clockInfo.resetCount');
  const restartCount = r.u32('clockInfo.restartCount');
  const safe = r.u8('clockInfo.safe') !== 0;
  const firmwareVersion = r.u64('firmwareVersion');
  let attested: Attested;
  if (type === TPM_ST.ATTEST_CERTIFY) {
    attested = { kind: 'certify', name: r.tpm2b('attested.name', 66), qualifiedName: r.tpm2b('attested.qualifiedName', 66) };
  } else if (type === TPM_ST.ATTEST_QUOTE) {
    attested = { kind: 'quote', pcrSelect: readPcrSelections(r, 'attested.pcrSelect'), pcrDigest: r.tpm2b('attested.pcrDigest', 64) };
  } else {
    throw new TpmResponseError(`${what}: attestation type 0x${type.toString(16)} is neither certify nor quote`);
  }
  r.end('attested');
  return { magic, type, qualifiedSigner, extraData, clock, resetCount, restartCount, safe, firmwareVersion, attested };
}

/** TPMT_SIGNATURE (RSASSA/RSAPSS only). */
export interface TpmSignature {
  sigAlg: number;
  hash: number;
  sig: Buffer;
}

export function readSignature(r: Reader, field: string): TpmSignature {
  const sigAlg = r.u16(`${field}.sigAlg`);
  if (sigAlg !== TPM_ALG.RSASSA && sigAlg !== TPM_ALG.RSAPSS) throw new TpmResponseError(`${field}: signature algorithm 0x${sigAlg.toString(16)} is not RSASSA or RSAPSS`);
  const hash = r.u16(`${field}.hash`);
  const sig = r.tpm2b(`${field}.sig`, 512);
  return { sigAlg, hash, sig };
}
