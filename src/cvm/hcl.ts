/**
 * The paravisor's HCL attestation report (vTPM NV index 0x01400001, CVM-PROTOCOL §3):
 *
 *   0     32    header: "HCLA", version, report size, request type, status, reserved
 *   32    1184  the hardware report: SEV-SNP ATTESTATION_REPORT (VMPL 0, src/snp/report), or on TDX a
 *               1024-byte TDREPORT (src/tdx/tdreport) followed by zeros
 *   1216  20    variable-data header: data size (= 20 + N), version, report type (2 = SNP, 4 = TDX), hash type, N
 *   1236  N     runtime claims: UTF-8 JSON, exactly the bytes whose hash is REPORT_DATA[0:hashLen]
 *   ...         zero padding to the NV index size (ignored)
 *
 * Verification checks the claims binding on the exact stored bytes (never a re-serialisation), then
 * VMPL 0, then the embedded report exactly as a bare report is checked (src/certs verifyReport). A TDX
 * report's TDREPORT is only MAC'd for the CPU: it is verified through the TD quote of it (src/tdx/verify).
 */
import { createHash } from 'node:crypto';
import { toHex } from '../common/bytes';
import { InvalidInputError, VerificationError } from '../common/errors';
import type { TrustStore } from '../certs/roots';
import type { AmdCertChain } from '../certs/types';
import { verifyReport, type VerifiedReport, type VerifyOptions } from '../certs/verify';
import { AttestationReport, Off, parseReport, REPORT_SIZE, reportToJson, type ReportJson } from '../snp/report';
import type { Product } from '../snp/tcb';
import { parseTdReport, TDREPORT_SIZE, tdReportToJson, type TdReport, type TdReportJson } from '../tdx/tdreport';

export const HCL_SIGNATURE = 'HCLA';
export const HCL_HEADER_SIZE = 32;
export const HCL_REPORT_OFFSET = HCL_HEADER_SIZE;
export const HCL_VAR_DATA_OFFSET = HCL_REPORT_OFFSET + REPORT_SIZE; // 1216
export const HCL_VAR_DATA_HEADER_SIZE = 20;
export const HCL_CLAIMS_OFFSET = HCL_VAR_DATA_OFFSET + HCL_VAR_DATA_HEADER_SIZE; // 1236
/** Azure's index is 2600 bytes (swtpm caps NV indices at 2048); anything far beyond is not a report. */
export const MAX_HCL_BYTES = 8192;

export const HCL_REPORT_TYPE = { SNP: 2, TDX: 4 } as const;
export const HCL_HASH_TYPES: Readonly<Record<number, { name: 'sha256' | 'sha384' | 'sha512'; size: number }>> = {
  1: { name: 'sha256', size: 32 },
  2: { name: 'sha384', size: 48 },
  3: { name: 'sha512', size: 64 },
};

/** An RSA JWK of the runtime claims (`HCLAkPub`, `HCLEkPub`). */
export interface ClaimsJwk {
  kid: string;
  kty: string;
  n?: string;
  e?: string;
  key_ops?: string[];
}

export interface HclReport {
  header: { version: number; reportSize: number; requestType: number; status: number };
  /** The 1184 bytes of the embedded SNP report. */
  snpReportBytes: Buffer;
  report: AttestationReport;
  varData: { dataSize: number; version: number; reportType: number; hashType: number; claimsSize: number };
  /** Exactly the stored claim bytes (what REPORT_DATA hashes). */
  claimsBytes: Buffer;
  claims: Record<string, unknown>;
}

function bad(message: string): InvalidInputError {
  return new InvalidInputError('ERR_HCL_REPORT', `HCL report: ${message}`);
}

/** Real claims nest 3 levels; the bound keeps every consumer (decode output, re-serialisation) small. */
export const MAX_CLAIMS_DEPTH = 16;

/** Whether a parsed JSON value nests deeper than `max` levels of objects/arrays (iterative: no stack to exhaust). */
function nestsDeeperThan(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop() as [unknown, number];
    if (typeof v !== 'object' || v === null) continue;
    if (d > max) return true;
    for (const c of Object.values(v)) stack.push([c, d + 1]);
  }
  return false;
}

export function isHclReport(b: Uint8Array): boolean {
  return b.length >= 4 && Buffer.from(b.subarray(0, 4)).toString('latin1') === HCL_SIGNATURE;
}

interface HclFrame {
  header: HclReport['header'];
  hwReportBytes: Buffer;
  varData: HclReport['varData'];
  claimsBytes: Buffer;
  claims: Record<string, unknown>;
}

/** Header, variable-data header and claims: the parts both TEEs share. */
function parseHclFrame(input: Uint8Array): HclFrame {
  const b = Buffer.from(input);
  if (b.length > MAX_HCL_BYTES) throw bad(`${b.length} bytes is more than the ${MAX_HCL_BYTES} an HCL report index can hold`);
  if (b.length < 4 || !isHclReport(b)) throw bad(`does not start with "${HCL_SIGNATURE}"`);
  if (b.length < HCL_CLAIMS_OFFSET) throw bad(`truncated: ${b.length} bytes, the fixed part alone is ${HCL_CLAIMS_OFFSET}`);
  const header = { version: b.readUInt32LE(4), reportSize: b.readUInt32LE(8), requestType: b.readUInt32LE(12), status: b.readUInt32LE(16) };
  const v = HCL_VAR_DATA_OFFSET;
  const varData = {
    dataSize: b.readUInt32LE(v),
    version: b.readUInt32LE(v + 4),
    reportType: b.readUInt32LE(v + 8),
    hashType: b.readUInt32LE(v + 12),
    claimsSize: b.readUInt32LE(v + 16),
  };
  if (varData.reportType !== HCL_REPORT_TYPE.SNP && varData.reportType !== HCL_REPORT_TYPE.TDX) {
    throw bad(`report type ${varData.reportType} is not 2 (SEV-SNP) or 4 (TDX)`);
  }
  if (!HCL_HASH_TYPES[varData.hashType]) throw bad(`hash type ${varData.hashType} is not 1 (SHA-256), 2 (SHA-384) or 3 (SHA-512)`);
  if (varData.claimsSize > b.length - HCL_CLAIMS_OFFSET) {
    throw bad(`truncated: claims size ${varData.claimsSize} but only ${b.length - HCL_CLAIMS_OFFSET} bytes follow the variable-data header`);
  }
  if (varData.dataSize !== HCL_VAR_DATA_HEADER_SIZE + varData.claimsSize) {
    throw bad(`variable-data size ${varData.dataSize} is not ${HCL_VAR_DATA_HEADER_SIZE} + claims size ${varData.claimsSize}`);
  }
  const claimsBytes = Buffer.from(b.subarray(HCL_CLAIMS_OFFSET, HCL_CLAIMS_OFFSET + varData.claimsSize));
  let claims: unknown;
  try {
    claims = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(claimsBytes));
  } catch (e) {
    throw bad(`runtime claims are not UTF-8 JSON: ${(e as Error).message.slice(0, 100)}`);
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) throw bad('runtime claims are not a JSON object');
  if (nestsDeeperThan(claims, MAX_CLAIMS_DEPTH)) throw bad(`runtime claims nest deeper than ${MAX_CLAIMS_DEPTH} levels`);
  const hwReportBytes = Buffer.from(b.subarray(HCL_REPORT_OFFSET, HCL_VAR_DATA_OFFSET));
  return { header, hwReportBytes, varData, claimsBytes, claims: claims as Record<string, unknown> };
}

/** The TEE whose hardware report an HCL report carries (variable-data report type), without parsing the rest. */
export function hclTeeOf(input: Uint8Array): HclTee | undefined {
  if (!isHclReport(input) || input.length < HCL_CLAIMS_OFFSET) return undefined;
  const t = Buffer.from(input.buffer, input.byteOffset, input.byteLength).readUInt32LE(HCL_VAR_DATA_OFFSET + 8);
  return t === HCL_REPORT_TYPE.SNP ? 'sevsnp' : t === HCL_REPORT_TYPE.TDX ? 'tdx' : undefined;
}

/** Parse an SEV-SNP HCL report (the whole NV content, padding included). Throws InvalidInputError naming the field. */
export function parseHclReport(input: Uint8Array): HclReport {
  const f = parseHclFrame(input);
  if (f.varData.reportType !== HCL_REPORT_TYPE.SNP) throw bad(`report type ${f.varData.reportType} (TDX) where an SEV-SNP report (type 2) was expected`);
  const report = parseReport(f.hwReportBytes);
  return { header: f.header, snpReportBytes: f.hwReportBytes, report, varData: f.varData, claimsBytes: f.claimsBytes, claims: f.claims };
}

/** An HCL report of a TDX CVM: the TDREPORT in the first 1024 bytes of the hardware-report area. */
export interface TdxHclReport {
  header: HclReport['header'];
  tdReportBytes: Buffer;
  tdReport: TdReport;
  varData: HclReport['varData'];
  claimsBytes: Buffer;
  claims: Record<string, unknown>;
}

export function parseTdxHclReport(input: Uint8Array): TdxHclReport {
  const f = parseHclFrame(input);
  if (f.varData.reportType !== HCL_REPORT_TYPE.TDX) throw bad(`report type ${f.varData.reportType} (SEV-SNP) where a TDX report (type 4) was expected`);
  const tdReportBytes = Buffer.from(f.hwReportBytes.subarray(0, TDREPORT_SIZE));
  let tdReport: TdReport;
  try {
    tdReport = parseTdReport(tdReportBytes);
  } catch (e) {
    throw bad((e as Error).message);
  }
  return { header: f.header, tdReportBytes, tdReport, varData: f.varData, claimsBytes: f.claimsBytes, claims: f.claims };
}

export type HclTee = 'sevsnp' | 'tdx';
/** An HCL report of either TEE, as the vTPM holds it. */
export type CvmHcl = HclReport | TdxHclReport;

export function isTdxHcl(h: CvmHcl): h is TdxHclReport {
  return 'tdReport' in h;
}
export type AnyHclReport = { tee: 'sevsnp'; hcl: HclReport } | { tee: 'tdx'; hcl: TdxHclReport };

/** Either TEE, chosen by the report type the paravisor wrote. */
export function parseAnyHclReport(input: Uint8Array): AnyHclReport {
  const f = parseHclFrame(input);
  return f.varData.reportType === HCL_REPORT_TYPE.TDX ? { tee: 'tdx', hcl: parseTdxHclReport(input) } : { tee: 'sevsnp', hcl: parseHclReport(input) };
}

/** A key of the runtime claims by kid (never by position or key_ops). */
export function claimsKey(claims: Record<string, unknown>, kid: string): ClaimsJwk | undefined {
  const keys = claims['keys'];
  if (!Array.isArray(keys)) return undefined;
  const k = keys.find((x: unknown) => typeof x === 'object' && x !== null && (x as { kid?: unknown }).kid === kid) as ClaimsJwk | undefined;
  return k;
}

/** `user-data` of the claims (128 upper-case hex characters), when present. */
export function claimsUserData(claims: Record<string, unknown>): string | undefined {
  const u = claims['user-data'];
  return typeof u === 'string' ? u : undefined;
}

/**
 * Step `hcl-claims-binding`: REPORT_DATA[0:hashLen] = H(claims bytes) and the rest of REPORT_DATA zero.
 * Used on an HCL report and by the MAA emulator on AzureGuest evidence (report and claims sent apart).
 */
export function checkHclClaimsBinding(report: AttestationReport, claimsBytes: Buffer, hashType = 1): void {
  checkClaimsBinding(report.reportData, claimsBytes, hashType);
}

/** The same binding on any hardware REPORT_DATA / REPORTDATA (SEV-SNP report, TDREPORT, TD quote body). */
export function checkClaimsBinding(reportData: Buffer, claimsBytes: Buffer, hashType = 1): void {
  const h = HCL_HASH_TYPES[hashType];
  if (!h) throw new VerificationError('hcl-claims-binding', `hcl-claims-binding: hash type ${hashType} is not supported`);
  const digest = createHash(h.name).update(claimsBytes).digest();
  const expected = Buffer.concat([digest, Buffer.alloc(64 - h.size)]);
  if (!expected.equals(reportData)) {
    throw new VerificationError(
      'hcl-claims-binding',
      `hcl-claims-binding: REPORT_DATA ${toHex(reportData)} is not ${h.name}(runtime claims) ${toHex(digest)} followed by zeros: the claims are not the ones the hardware report vouches for`,
    );
  }
}

/** Step `hcl-vmpl`: the paravisor's report is requested at VMPL 0; anything else is not the HCL's. */
export function checkHclVmpl(report: AttestationReport): void {
  if (report.vmpl !== 0) throw new VerificationError('hcl-vmpl', `hcl-vmpl: the embedded report is from VMPL ${report.vmpl}, the paravisor's is VMPL 0`);
}

export interface VerifiedHclReport {
  hcl: HclReport;
  verified: VerifiedReport;
}

/** Claims binding, VMPL 0, then the embedded report (chain, TCB, signature) with src/certs' step names. */
export function verifyHclReport(input: Uint8Array | CvmHcl, chain: AmdCertChain, trust: TrustStore, opts: VerifyOptions = {}): VerifiedHclReport {
  const parsed = input instanceof Uint8Array ? parseHclReport(input) : input;
  if (isTdxHcl(parsed)) throw bad('a TDX report is verified through the TD quote of its TDREPORT (src/tdx/verify), not an AMD chain');
  const hcl = parsed;
  checkHclClaimsBinding(hcl.report, hcl.claimsBytes, hcl.varData.hashType);
  checkHclVmpl(hcl.report);
  const verified = verifyReport(hcl.snpReportBytes, chain, trust, opts);
  return { hcl, verified };
}

export interface HclReportJson {
  header: HclReport['header'] & { signature: string };
  report: ReportJson;
  varData: HclReport['varData'];
  claims: Record<string, unknown>;
  /** Offset of REPORT_DATA inside the whole HCL report, for people reading hex dumps. */
  reportDataOffset: number;
}

/** The decode view: header, the embedded report's fields and the runtime claims. */
export function hclToJson(hcl: HclReport, fallbackProduct: Product = 'Milan'): HclReportJson {
  return {
    header: { signature: HCL_SIGNATURE, ...hcl.header },
    report: reportToJson(hcl.report, fallbackProduct),
    varData: hcl.varData,
    claims: hcl.claims,
    reportDataOffset: HCL_REPORT_OFFSET + Off.reportData,
  };
}

export interface BuildHclOptions {
  /** The signed 1184-byte SNP report (its REPORT_DATA must already bind the claims). */
  snpReport: Buffer;
  claimsBytes: Buffer;
  hashType?: number;
  version?: number;
  /** Pad the result with zeros to this size (the NV index size). */
  padTo?: number;
}

/** Serialise an HCL report (simulated paravisor, tests). */
export function buildHclReport(o: BuildHclOptions): Buffer {
  if (o.snpReport.length !== REPORT_SIZE) throw new InvalidInputError('ERR_HCL_REPORT', `embedded report must be ${REPORT_SIZE} bytes`);
  const header = Buffer.alloc(HCL_HEADER_SIZE);
  header.write(HCL_SIGNATURE, 0, 'latin1');
  header.writeUInt32LE(o.version ?? 2, 4);
  // Real reports put the total meaningful length here (CVM-PROTOCOL §12-1); so do we.
  header.writeUInt32LE(HCL_CLAIMS_OFFSET + o.claimsBytes.length, 8);
  header.writeUInt32LE(2, 12);
  const vd = Buffer.alloc(HCL_VAR_DATA_HEADER_SIZE);
  vd.writeUInt32LE(HCL_VAR_DATA_HEADER_SIZE + o.claimsBytes.length, 0);
  vd.writeUInt32LE(1, 4);
  vd.writeUInt32LE(HCL_REPORT_TYPE.SNP, 8);
  vd.writeUInt32LE(o.hashType ?? 1, 12);
  vd.writeUInt32LE(o.claimsBytes.length, 16);
  const out = Buffer.concat([header, o.snpReport, vd, o.claimsBytes]);
  if (o.padTo !== undefined) {
    if (o.padTo < out.length) throw new InvalidInputError('ERR_HCL_REPORT', `HCL report is ${out.length} bytes, more than the ${o.padTo}-byte index`);
    return Buffer.concat([out, Buffer.alloc(o.padTo - out.length)]);
  }
  return out;
}

/** REPORT_DATA for claims: H(claims) then zeros. */
export function hclReportData(claimsBytes: Buffer, hashType = 1): Buffer {
  const h = HCL_HASH_TYPES[hashType];
  if (!h) throw new InvalidInputError('ERR_HCL_REPORT', `hash type ${hashType} is not supported`);
  return Buffer.concat([createHash(h.name).update(claimsBytes).digest(), Buffer.alloc(64 - h.size)]);
}

export interface TdxHclReportJson {
  header: HclReport['header'] & { signature: string };
  td_report: TdReportJson;
  varData: HclReport['varData'];
  claims: Record<string, unknown>;
  /** Offset of REPORTDATA inside the whole HCL report, for people reading hex dumps. */
  reportDataOffset: number;
}

export function tdxHclToJson(hcl: TdxHclReport): TdxHclReportJson {
  return {
    header: { signature: HCL_SIGNATURE, ...hcl.header },
    td_report: tdReportToJson(hcl.tdReport),
    varData: hcl.varData,
    claims: hcl.claims,
    reportDataOffset: HCL_REPORT_OFFSET + 128,
  };
}

/** Serialise a TDX HCL report (simulated paravisor, tests): the TDREPORT, zeros to 1184, claims. */
export function buildTdxHclReport(o: { tdReport: Buffer; claimsBytes: Buffer; hashType?: number; padTo?: number }): Buffer {
  if (o.tdReport.length !== TDREPORT_SIZE) throw new InvalidInputError('ERR_HCL_REPORT', `TDREPORT must be ${TDREPORT_SIZE} bytes`);
  const hw = Buffer.concat([o.tdReport, Buffer.alloc(REPORT_SIZE - TDREPORT_SIZE)]);
  const out = buildHclReport({ snpReport: hw, claimsBytes: o.claimsBytes, hashType: o.hashType, padTo: o.padTo });
  out.writeUInt32LE(HCL_REPORT_TYPE.TDX, HCL_VAR_DATA_OFFSET + 8);
  return out;
}
