/**
 * The TDREPORT (TDX module ABI, TDG.MR.REPORT output): 1024 bytes, MAC'd by the CPU for the local
 * quoting enclave only. On an Azure TDX CVM the paravisor puts it in the HCL report's hardware area.
 *
 *   0    256  REPORTMACSTRUCT: REPORTTYPE(4: type 0x81, subtype, version, reserved), reserved(12), CPUSVN(16),
 *             TEE_TCB_INFO_HASH(48), TEE_INFO_HASH(48), REPORTDATA(64), reserved(32), MAC(32)
 *   256  239  TEE_TCB_INFO: VALID(8), TEE_TCB_SVN(16), MRSEAM(48), MRSIGNERSEAM(48), ATTRIBUTES(8),
 *             TEE_TCB_SVN2(16, TDX 1.5), reserved
 *   495  17   reserved
 *   512  512  TDINFO: ATTRIBUTES(8), XFAM(8), MRTD(48), MRCONFIGID(48), MROWNER(48), MROWNERCONFIG(48),
 *             RTMR0..3(4×48), SERVTD_HASH(48, TDX 1.5), reserved
 *
 * The MAC cannot be checked outside the CPU; the two hashes in REPORTMACSTRUCT can (SHA-384 of the
 * TEE_TCB_INFO and TDINFO bytes), which ties the fields we read to what the MAC covers.
 */
import { createHash } from 'node:crypto';
import { toHex } from '../common/bytes';
import { InvalidInputError } from '../common/errors';

export const TDREPORT_SIZE = 1024;
export const TDX_TEE_TYPE = 0x81;

export const TdReportOff = {
  reportType: 0,
  cpuSvn: 16,
  teeTcbInfoHash: 32,
  teeInfoHash: 80,
  reportData: 128,
  mac: 224,
  teeTcbInfo: 256,
  teeTcbInfoSize: 239,
  tdInfo: 512,
  tdInfoSize: 512,
} as const;

/** The measured fields a TD quote's body repeats (names as in Intel's quote layout). */
export interface TdMeasurements {
  teeTcbSvn: Buffer;
  mrSeam: Buffer;
  mrSignerSeam: Buffer;
  seamAttributes: Buffer;
  tdAttributes: Buffer;
  xfam: Buffer;
  mrTd: Buffer;
  mrConfigId: Buffer;
  mrOwner: Buffer;
  mrOwnerConfig: Buffer;
  rtmrs: [Buffer, Buffer, Buffer, Buffer];
  reportData: Buffer;
}

export interface TdReport extends TdMeasurements {
  raw: Buffer;
  reportType: { type: number; subtype: number; version: number };
  cpuSvn: Buffer;
  teeTcbInfoHash: Buffer;
  teeInfoHash: Buffer;
  mac: Buffer;
  teeTcbInfoValid: Buffer;
  /** TDX 1.5 only (zeros on 1.0 modules). */
  teeTcbSvn2: Buffer;
  servTdHash: Buffer;
  teeTcbInfoBytes: Buffer;
  tdInfoBytes: Buffer;
}

const slice = (b: Buffer, at: number, len: number) => Buffer.from(b.subarray(at, at + len));

/** Parse exactly 1024 bytes; anything that is not a TDX TDREPORT is refused. */
export function parseTdReport(input: Uint8Array): TdReport {
  const b = Buffer.from(input);
  if (b.length !== TDREPORT_SIZE) throw new InvalidInputError('ERR_TDX_REPORT', `TDREPORT: ${b.length} bytes, a TDREPORT is ${TDREPORT_SIZE}`);
  const reportType = { type: b[0], subtype: b[1], version: b[2] };
  if (reportType.type !== TDX_TEE_TYPE) {
    throw new InvalidInputError('ERR_TDX_REPORT', `TDREPORT: REPORTTYPE.TYPE is 0x${reportType.type.toString(16)}, TDX is 0x81`);
  }
  const tcb = TdReportOff.teeTcbInfo;
  const td = TdReportOff.tdInfo;
  return {
    raw: b,
    reportType,
    cpuSvn: slice(b, TdReportOff.cpuSvn, 16),
    teeTcbInfoHash: slice(b, TdReportOff.teeTcbInfoHash, 48),
    teeInfoHash: slice(b, TdReportOff.teeInfoHash, 48),
    reportData: slice(b, TdReportOff.reportData, 64),
    mac: slice(b, TdReportOff.mac, 32),
    teeTcbInfoBytes: slice(b, tcb, TdReportOff.teeTcbInfoSize),
    teeTcbInfoValid: slice(b, tcb, 8),
    teeTcbSvn: slice(b, tcb + 8, 16),
    mrSeam: slice(b, tcb + 24, 48),
    mrSignerSeam: slice(b, tcb + 72, 48),
    seamAttributes: slice(b, tcb + 120, 8),
    teeTcbSvn2: slice(b, tcb + 128, 16),
    tdInfoBytes: slice(b, td, TdReportOff.tdInfoSize),
    tdAttributes: slice(b, td, 8),
    xfam: slice(b, td + 8, 8),
    mrTd: slice(b, td + 16, 48),
    mrConfigId: slice(b, td + 64, 48),
    mrOwner: slice(b, td + 112, 48),
    mrOwnerConfig: slice(b, td + 160, 48),
    rtmrs: [0, 1, 2, 3].map((i) => slice(b, td + 208 + 48 * i, 48)) as TdReport['rtmrs'],
    servTdHash: slice(b, td + 400, 48),
  };
}

/** TDINFO/TEE_TCB_INFO hashes in REPORTMACSTRUCT equal SHA-384 of those bytes (what the MAC covers). */
export function tdReportHashesMatch(r: TdReport): { teeTcbInfo: boolean; tdInfo: boolean } {
  const h = (x: Buffer) => createHash('sha384').update(x).digest();
  return { teeTcbInfo: h(r.teeTcbInfoBytes).equals(r.teeTcbInfoHash), tdInfo: h(r.tdInfoBytes).equals(r.teeInfoHash) };
}

/** TDATTRIBUTES bit 0: the TD is debuggable (its memory is readable by the host). */
export function tdIsDebuggable(tdAttributes: Buffer): boolean {
  return (tdAttributes[0] & 0x01) !== 0;
}

export interface TdMeasurementsJson {
  tee_tcb_svn: string;
  mr_seam: string;
  mr_signer_seam: string;
  seam_attributes: string;
  td_attributes: string;
  xfam: string;
  mr_td: string;
  mr_config_id: string;
  mr_owner: string;
  mr_owner_config: string;
  rtmr0: string;
  rtmr1: string;
  rtmr2: string;
  rtmr3: string;
  report_data: string;
  debug: boolean;
}

export function measurementsToJson(m: TdMeasurements): TdMeasurementsJson {
  return {
    tee_tcb_svn: toHex(m.teeTcbSvn),
    mr_seam: toHex(m.mrSeam),
    mr_signer_seam: toHex(m.mrSignerSeam),
    seam_attributes: toHex(m.seamAttributes),
    td_attributes: toHex(m.tdAttributes),
    xfam: toHex(m.xfam),
    mr_td: toHex(m.mrTd),
    mr_config_id: toHex(m.mrConfigId),
    mr_owner: toHex(m.mrOwner),
    mr_owner_config: toHex(m.mrOwnerConfig),
    rtmr0: toHex(m.rtmrs[0]),
    rtmr1: toHex(m.rtmrs[1]),
    rtmr2: toHex(m.rtmrs[2]),
    rtmr3: toHex(m.rtmrs[3]),
    report_data: toHex(m.reportData),
    debug: tdIsDebuggable(m.tdAttributes),
  };
}

export interface TdReportJson extends TdMeasurementsJson {
  report_type: { type: number; subtype: number; version: number };
  cpu_svn: string;
  tee_tcb_info_hash: string;
  tee_info_hash: string;
  tee_tcb_info_valid: string;
  tee_tcb_svn2: string;
  servtd_hash: string;
  mac: string;
  hashes_match: { tee_tcb_info: boolean; td_info: boolean };
}

export function tdReportToJson(r: TdReport): TdReportJson {
  const m = tdReportHashesMatch(r);
  return {
    report_type: r.reportType,
    cpu_svn: toHex(r.cpuSvn),
    tee_tcb_info_hash: toHex(r.teeTcbInfoHash),
    tee_info_hash: toHex(r.teeInfoHash),
    tee_tcb_info_valid: toHex(r.teeTcbInfoValid),
    ...measurementsToJson(r),
    tee_tcb_svn2: toHex(r.teeTcbSvn2),
    servtd_hash: toHex(r.servTdHash),
    mac: toHex(r.mac),
    hashes_match: { tee_tcb_info: m.teeTcbInfo, td_info: m.tdInfo },
  };
}

export interface BuildTdReportOptions extends TdMeasurements {
  cpuSvn?: Buffer;
  mac?: Buffer;
}

/** Serialise a TDREPORT with consistent hashes (simulated TD module, tests). */
export function buildTdReport(o: BuildTdReportOptions): Buffer {
  const b = Buffer.alloc(TDREPORT_SIZE);
  b[0] = TDX_TEE_TYPE;
  (o.cpuSvn ?? Buffer.alloc(16)).copy(b, TdReportOff.cpuSvn);
  o.reportData.copy(b, TdReportOff.reportData);
  (o.mac ?? Buffer.alloc(32)).copy(b, TdReportOff.mac);
  const tcb = TdReportOff.teeTcbInfo;
  Buffer.from('ff01030000000000', 'hex').copy(b, tcb);
  o.teeTcbSvn.copy(b, tcb + 8);
  o.mrSeam.copy(b, tcb + 24);
  o.mrSignerSeam.copy(b, tcb + 72);
  o.seamAttributes.copy(b, tcb + 120);
  const td = TdReportOff.tdInfo;
  o.tdAttributes.copy(b, td);
  o.xfam.copy(b, td + 8);
  o.mrTd.copy(b, td + 16);
  o.mrConfigId.copy(b, td + 64);
  o.mrOwner.copy(b, td + 112);
  o.mrOwnerConfig.copy(b, td + 160);
  o.rtmrs.forEach((r, i) => r.copy(b, td + 208 + 48 * i));
  const h = (x: Buffer) => createHash('sha384').update(x).digest();
  h(b.subarray(tcb, tcb + TdReportOff.teeTcbInfoSize)).copy(b, TdReportOff.teeTcbInfoHash);
  h(b.subarray(td, td + TdReportOff.tdInfoSize)).copy(b, TdReportOff.teeInfoHash);
  return b;
}
