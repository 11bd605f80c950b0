/**
 * The SEV-SNP ATTESTATION_REPORT (AMD SEV-SNP ABI, Table 22): 1184 bytes, little-endian.
 * Parsing keeps the raw bytes so signatures are always checked over exactly what the device produced.
 */
import { createHash } from 'node:crypto';
import { InvalidInputError } from '../common/errors';
import { toHex } from '../common/bytes';
import { decodeTcb, DecodedTcb, Product, productFromCpuid } from './tcb';

export const REPORT_SIZE = 1184;
/** The signature covers bytes [0, SIGNED_LENGTH). */
export const SIGNED_LENGTH = 0x2a0;
export const SIGNATURE_OFFSET = 0x2a0;
/** ECDSA P-384 with SHA-384, the only algorithm SNP firmware uses. */
export const SIG_ALGO_ECDSA_P384_SHA384 = 1;
/** Policy bit 19: the guest may be debugged by the host. */
export const POLICY_DEBUG_BIT = 1n << 19n;
export const POLICY_MIGRATE_MA_BIT = 1n << 18n;
export const POLICY_SMT_BIT = 1n << 16n;

export const Off = {
  version: 0x00,
  guestSvn: 0x04,
  policy: 0x08,
  familyId: 0x10,
  imageId: 0x20,
  vmpl: 0x30,
  signatureAlgo: 0x34,
  currentTcb: 0x38,
  platformInfo: 0x40,
  signerInfo: 0x48,
  reportData: 0x50,
  measurement: 0x90,
  hostData: 0xc0,
  idKeyDigest: 0xe0,
  authorKeyDigest: 0x110,
  reportId: 0x140,
  reportIdMa: 0x160,
  reportedTcb: 0x180,
  cpuidFamId: 0x188,
  cpuidModId: 0x189,
  cpuidStep: 0x18a,
  chipId: 0x1a0,
  committedTcb: 0x1e0,
  currentBuild: 0x1e8,
  currentMinor: 0x1e9,
  currentMajor: 0x1ea,
  committedBuild: 0x1ec,
  committedMinor: 0x1ed,
  committedMajor: 0x1ee,
  launchTcb: 0x1f0,
  signature: SIGNATURE_OFFSET,
} as const;

export const Len = {
  familyId: 16,
  imageId: 16,
  reportData: 64,
  measurement: 48,
  hostData: 32,
  idKeyDigest: 48,
  authorKeyDigest: 48,
  reportId: 32,
  reportIdMa: 32,
  chipId: 64,
  sigComponent: 72,
} as const;

export interface AttestationReport {
  /** The exact 1184 bytes this was parsed from (or serialised to). */
  raw: Buffer;
  version: number;
  guestSvn: number;
  policy: bigint;
  familyId: Buffer;
  imageId: Buffer;
  vmpl: number;
  signatureAlgo: number;
  currentTcb: bigint;
  platformInfo: bigint;
  signerInfo: number;
  reportData: Buffer;
  measurement: Buffer;
  hostData: Buffer;
  idKeyDigest: Buffer;
  authorKeyDigest: Buffer;
  reportId: Buffer;
  reportIdMa: Buffer;
  reportedTcb: bigint;
  /** CPUID family/model/stepping: version 3 and later; zero in version 2. */
  cpuidFamId: number;
  cpuidModId: number;
  cpuidStep: number;
  chipId: Buffer;
  committedTcb: bigint;
  currentBuild: number;
  currentMinor: number;
  currentMajor: number;
  committedBuild: number;
  committedMinor: number;
  committedMajor: number;
  launchTcb: bigint;
  /** r and s, each 72 bytes little-endian (only the low 48 bytes are significant for P-384). */
  signatureR: Buffer;
  signatureS: Buffer;
}

/** Fields a caller supplies to build a report; everything omitted is zero. */
export type ReportFields = Partial<Omit<AttestationReport, 'raw'>>;

export function parseReport(input: Uint8Array): AttestationReport {
  if (input.length !== REPORT_SIZE) {
    throw new InvalidInputError('ERR_REPORT_LENGTH', `an SEV-SNP report is ${REPORT_SIZE} bytes, got ${input.length}`);
  }
  const raw = Buffer.from(input);
  const version = raw.readUInt32LE(Off.version);
  if (version < 2) {
    throw new InvalidInputError('ERR_REPORT_VERSION', `report version ${version} is not supported (need 2 or later)`);
  }
  const bytes = (off: number, len: number) => Buffer.from(raw.subarray(off, off + len));
  const v3 = version >= 3;
  return {
    raw,
    version,
    guestSvn: raw.readUInt32LE(Off.guestSvn),
    policy: raw.readBigUInt64LE(Off.policy),
    familyId: bytes(Off.familyId, Len.familyId),
    imageId: bytes(Off.imageId, Len.imageId),
    vmpl: raw.readUInt32LE(Off.vmpl),
    signatureAlgo: raw.readUInt32LE(Off.signatureAlgo),
    currentTcb: raw.readBigUInt64LE(Off.currentTcb),
    platformInfo: raw.readBigUInt64LE(Off.platformInfo),
    signerInfo: raw.readUInt32LE(Off.signerInfo),
    reportData: bytes(Off.reportData, Len.reportData),
    measurement: bytes(Off.measurement, Len.measurement),
    hostData: bytes(Off.hostData, Len.hostData),
    idKeyDigest: bytes(Off.idKeyDigest, Len.idKeyDigest),
    authorKeyDigest: bytes(Off.authorKeyDigest, Len.authorKeyDigest),
    reportId: bytes(Off.reportId, Len.reportId),
    reportIdMa: bytes(Off.reportIdMa, Len.reportIdMa),
    reportedTcb: raw.readBigUInt64LE(Off.reportedTcb),
    cpuidFamId: v3 ? raw[Off.cpuidFamId] : 0,
    cpuidModId: v3 ? raw[Off.cpuidModId] : 0,
    cpuidStep: v3 ? raw[Off.cpuidStep] : 0,
    chipId: bytes(Off.chipId, Len.chipId),
    committedTcb: raw.readBigUInt64LE(Off.committedTcb),
    currentBuild: raw[Off.currentBuild],
    currentMinor: raw[Off.currentMinor],
    currentMajor: raw[Off.currentMajor],
    committedBuild: raw[Off.committedBuild],
    committedMinor: raw[Off.committedMinor],
    committedMajor: raw[Off.committedMajor],
    launchTcb: raw.readBigUInt64LE(Off.launchTcb),
    signatureR: bytes(Off.signature, Len.sigComponent),
    signatureS: bytes(Off.signature + Len.sigComponent, Len.sigComponent),
  };
}

function putBytes(out: Buffer, off: number, len: number, v: Buffer | undefined, name: string): void {
  if (v === undefined) return;
  if (v.length !== len) throw new InvalidInputError('ERR_REPORT_FIELD', `${name} must be ${len} bytes, got ${v.length}`);
  v.copy(out, off);
}

/** Serialise fields into a 1184-byte report (signature included if given; see simulator for signing). */
export function buildReport(f: ReportFields): Buffer {
  const out = Buffer.alloc(REPORT_SIZE);
  out.writeUInt32LE(f.version ?? 3, Off.version);
  out.writeUInt32LE(f.guestSvn ?? 0, Off.guestSvn);
  out.writeBigUInt64LE(f.policy ?? 0n, Off.policy);
  putBytes(out, Off.familyId, Len.familyId, f.familyId, 'familyId');
  putBytes(out, Off.imageId, Len.imageId, f.imageId, 'imageId');
  out.writeUInt32LE(f.vmpl ?? 0, Off.vmpl);
  out.writeUInt32LE(f.signatureAlgo ?? SIG_ALGO_ECDSA_P384_SHA384, Off.signatureAlgo);
  out.writeBigUInt64LE(f.currentTcb ?? 0n, Off.currentTcb);
  out.writeBigUInt64LE(f.platformInfo ?? 0n, Off.platformInfo);
  out.writeUInt32LE(f.signerInfo ?? 0, Off.signerInfo);
  putBytes(out, Off.reportData, Len.reportData, f.reportData, 'reportData');
  putBytes(out, Off.measurement, Len.measurement, f.measurement, 'measurement');
  putBytes(out, Off.hostData, Len.hostData, f.hostData, 'hostData');
  putBytes(out, Off.idKeyDigest, Len.idKeyDigest, f.idKeyDigest, 'idKeyDigest');
  putBytes(out, Off.authorKeyDigest, Len.authorKeyDigest, f.authorKeyDigest, 'authorKeyDigest');
  putBytes(out, Off.reportId, Len.reportId, f.reportId, 'reportId');
  putBytes(out, Off.reportIdMa, Len.reportIdMa, f.reportIdMa, 'reportIdMa');
  out.writeBigUInt64LE(f.reportedTcb ?? 0n, Off.reportedTcb);
  out[Off.cpuidFamId] = f.cpuidFamId ?? 0;
  out[Off.cpuidModId] = f.cpuidModId ?? 0;
  out[Off.cpuidStep] = f.cpuidStep ?? 0;
  putBytes(out, Off.chipId, Len.chipId, f.chipId, 'chipId');
  out.writeBigUInt64LE(f.committedTcb ?? 0n, Off.committedTcb);
  out[Off.currentBuild] = f.currentBuild ?? 0;
  out[Off.currentMinor] = f.currentMinor ?? 0;
  out[Off.currentMajor] = f.currentMajor ?? 0;
  out[Off.committedBuild] = f.committedBuild ?? 0;
  out[Off.committedMinor] = f.committedMinor ?? 0;
  out[Off.committedMajor] = f.committedMajor ?? 0;
  out.writeBigUInt64LE(f.launchTcb ?? 0n, Off.launchTcb);
  putBytes(out, Off.signature, Len.sigComponent, f.signatureR, 'signatureR');
  putBytes(out, Off.signature + Len.sigComponent, Len.sigComponent, f.signatureS, 'signatureS');
  return out;
}

/** The product a report was produced on, when the report says (v3+ CPUID); else the fallback. */
export function reportProduct(r: AttestationReport, fallback: Product = 'Milan'): Product {
  return productFromCpuid(r.cpuidFamId, r.cpuidModId) ?? fallback;
}

/** Policy flags worth showing a human. */
export function describePolicy(policy: bigint): { abiMajor: number; abiMinor: number; smt: boolean; migrateMa: boolean; debug: boolean; singleSocket: boolean } {
  return {
    abiMinor: Number(policy & 0xffn),
    abiMajor: Number((policy >> 8n) & 0xffn),
    smt: (policy & POLICY_SMT_BIT) !== 0n,
    migrateMa: (policy & POLICY_MIGRATE_MA_BIT) !== 0n,
    debug: (policy & POLICY_DEBUG_BIT) !== 0n,
    singleSocket: (policy & (1n << 20n)) !== 0n,
  };
}

function u64Json(v: bigint): number | string {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : '0x' + v.toString(16);
}

export interface ReportJson {
  version: number;
  guestSvn: number;
  policy: number | string;
  familyId: string;
  imageId: string;
  vmpl: number;
  signatureAlgo: number;
  currentTcb: DecodedTcb;
  platformInfo: number | string;
  signerInfo: number;
  reportData: string;
  measurement: string;
  hostData: string;
  idKeyDigest: string;
  authorKeyDigest: string;
  reportId: string;
  reportIdMa: string;
  reportedTcb: DecodedTcb;
  cpuid?: { family: number; model: number; stepping: number };
  chipId: string;
  committedTcb: DecodedTcb;
  currentVersion: string;
  committedVersion: string;
  launchTcb: DecodedTcb;
  signature: { r: string; s: string };
  product: Product;
}

/** The `skr report decode --json` shape: camelCase keys, bytes as lowercase hex. */
export function reportToJson(r: AttestationReport, fallbackProduct: Product = 'Milan'): ReportJson {
  const product = reportProduct(r, fallbackProduct);
  const out: ReportJson = {
    version: r.version,
    guestSvn: r.guestSvn,
    policy: u64Json(r.policy),
    familyId: toHex(r.familyId),
    imageId: toHex(r.imageId),
    vmpl: r.vmpl,
    signatureAlgo: r.signatureAlgo,
    currentTcb: decodeTcb(r.currentTcb, product),
    platformInfo: u64Json(r.platformInfo),
    signerInfo: r.signerInfo,
    reportData: toHex(r.reportData),
    measurement: toHex(r.measurement),
    hostData: toHex(r.hostData),
    idKeyDigest: toHex(r.idKeyDigest),
    authorKeyDigest: toHex(r.authorKeyDigest),
    reportId: toHex(r.reportId),
    reportIdMa: toHex(r.reportIdMa),
    reportedTcb: decodeTcb(r.reportedTcb, product),
    chipId: toHex(r.chipId),
    committedTcb: decodeTcb(r.committedTcb, product),
    currentVersion: `${r.currentMajor}.${r.currentMinor}.${r.currentBuild}`,
    committedVersion: `${r.committedMajor}.${r.committedMinor}.${r.committedBuild}`,
    launchTcb: decodeTcb(r.launchTcb, product),
    signature: { r: toHex(r.signatureR), s: toHex(r.signatureS) },
    product,
  };
  if (r.version >= 3) out.cpuid = { family: r.cpuidFamId, model: r.cpuidModId, stepping: r.cpuidStep };
  return out;
}

/** REPORT_DATA the sidecar binds: sha256(runtime data) followed by 32 zero bytes. */
export function reportDataFor(runtimeData: Uint8Array): Buffer {
  return Buffer.concat([createHash('sha256').update(runtimeData).digest(), Buffer.alloc(32)]);
}
