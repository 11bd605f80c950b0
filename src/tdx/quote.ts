/**
 * Intel DCAP quotes for TDX, versions 4 and 5 (Intel TDX DCAP Quoting Library API, appendix A):
 *
 *   v4: header(48) ‖ TD report body 1.0 (584)                         ‖ u32 sigLen ‖ signature data
 *   v5: header(48) ‖ u16 body type (2 = TD 1.0, 3 = TD 1.5) ‖ u32 size ‖ body ‖ u32 sigLen ‖ signature data
 *
 *   header: u16 version, u16 attestation key type (2 = ECDSA P-256), u32 TEE type (0x81 TDX),
 *           u16 ×2 reserved, QE vendor id(16), user data(20)
 *   signature data: ECDSA signature r‖s (64) over every byte before sigLen, attestation key x‖y (64),
 *           certification data {u16 type, u32 size, data}; type 6 = QE report certification data:
 *           QE report (an SGX report body, 384), its ECDSA signature (64), u16 + QE authentication data,
 *           then the inner certification data, type 5 = the PCK certificate chain as PEM.
 *
 * Decoding only: nothing here is trusted until src/tdx/verify has checked it.
 */
import { toHex } from '../common/bytes';
import { InvalidInputError } from '../common/errors';
import { measurementsToJson, TDX_TEE_TYPE, type TdMeasurements, type TdMeasurementsJson } from './tdreport';

export const QUOTE_HEADER_SIZE = 48;
export const TD_BODY_10_SIZE = 584;
export const TD_BODY_15_SIZE = 648;
export const SGX_REPORT_BODY_SIZE = 384;
/** Microsoft's client caps TD quotes at 8 KiB; a real one is ~5 KB. */
export const MAX_QUOTE_BYTES = 8192;
export const ATT_KEY_TYPE_ECDSA_P256 = 2;
export const CERT_DATA_PCK_CHAIN = 5;
export const CERT_DATA_QE_REPORT = 6;
/** Intel's QE vendor id (939a7233-f79c-4ca9-940a-0db3957f0607). */
export const INTEL_QE_VENDOR_ID = '939a7233f79c4ca9940a0db3957f0607';

export interface QuoteHeader {
  version: number;
  attestationKeyType: number;
  teeType: number;
  qeVendorId: Buffer;
  userData: Buffer;
}

export interface TdQuoteBody extends TdMeasurements {
  /** 1.0 (584 bytes) or 1.5 (648 bytes: adds TEE_TCB_SVN2 and MRSERVICETD). */
  bodyVersion: '1.0' | '1.5';
  teeTcbSvn2?: Buffer;
  mrServiceTd?: Buffer;
}

/** The 384-byte SGX report body of the quoting enclave. */
export interface QeReport {
  raw: Buffer;
  cpuSvn: Buffer;
  miscSelect: number;
  attributes: Buffer;
  mrEnclave: Buffer;
  mrSigner: Buffer;
  isvProdId: number;
  isvSvn: number;
  reportData: Buffer;
}

export interface TdQuote {
  raw: Buffer;
  header: QuoteHeader;
  body: TdQuoteBody;
  /** Every byte the attestation key signs (header, [body descriptor,] body). */
  signedBytes: Buffer;
  /** r‖s, big-endian. */
  signature: Buffer;
  /** x‖y of the P-256 attestation key. */
  attestationKey: Buffer;
  qeReport: QeReport;
  qeReportSignature: Buffer;
  qeAuthData: Buffer;
  /** The inner certification data (type 5): PEM text, trailing NULs removed. */
  pckChainPem: string;
  /** Zero bytes after the quote (IMDS pads its answer). */
  trailingZeros: number;
}

function bad(message: string): InvalidInputError {
  return new InvalidInputError('ERR_TD_QUOTE', `TD quote: ${message}`);
}

/** A DCAP quote header (v4/v5) of either TEE: what callers use to say "this is a quote" early. */
export function quoteKind(b: Uint8Array): 'tdx' | 'sgx' | undefined {
  if (b.length < QUOTE_HEADER_SIZE) return undefined;
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const version = buf.readUInt16LE(0);
  if (version !== 4 && version !== 5) return undefined;
  if (buf.readUInt16LE(2) > 3) return undefined;
  const tee = buf.readUInt32LE(4);
  if (tee === TDX_TEE_TYPE) return 'tdx';
  if (tee === 0) return 'sgx';
  return undefined;
}

export function isTdQuote(b: Uint8Array): boolean {
  return quoteKind(b) === 'tdx';
}

class Cursor {
  constructor(
    readonly b: Buffer,
    public at: number,
    readonly end: number,
  ) {}
  take(n: number, what: string): Buffer {
    if (n < 0 || this.at + n > this.end) throw bad(`truncated in ${what}: needs ${n} bytes at offset ${this.at}, ${Math.max(0, this.end - this.at)} left`);
    const out = Buffer.from(this.b.subarray(this.at, this.at + n));
    this.at += n;
    return out;
  }
  u16(what: string): number {
    return this.take(2, what).readUInt16LE(0);
  }
  u32(what: string): number {
    return this.take(4, what).readUInt32LE(0);
  }
}

function parseBody(c: Cursor, size: number): TdQuoteBody {
  const s = (n: number, what: string) => c.take(n, `TD report body ${what}`);
  const body: TdQuoteBody = {
    bodyVersion: size === TD_BODY_15_SIZE ? '1.5' : '1.0',
    teeTcbSvn: s(16, 'TEE_TCB_SVN'),
    mrSeam: s(48, 'MRSEAM'),
    mrSignerSeam: s(48, 'MRSIGNERSEAM'),
    seamAttributes: s(8, 'SEAMATTRIBUTES'),
    tdAttributes: s(8, 'TDATTRIBUTES'),
    xfam: s(8, 'XFAM'),
    mrTd: s(48, 'MRTD'),
    mrConfigId: s(48, 'MRCONFIGID'),
    mrOwner: s(48, 'MROWNER'),
    mrOwnerConfig: s(48, 'MROWNERCONFIG'),
    rtmrs: [s(48, 'RTMR0'), s(48, 'RTMR1'), s(48, 'RTMR2'), s(48, 'RTMR3')],
    reportData: s(64, 'REPORTDATA'),
  };
  if (size === TD_BODY_15_SIZE) {
    body.teeTcbSvn2 = s(16, 'TEE_TCB_SVN2');
    body.mrServiceTd = s(48, 'MRSERVICETD');
  }
  return body;
}

export function parseQeReport(raw: Buffer): QeReport {
  if (raw.length !== SGX_REPORT_BODY_SIZE) throw bad(`QE report is ${raw.length} bytes, not ${SGX_REPORT_BODY_SIZE}`);
  return {
    raw,
    cpuSvn: raw.subarray(0, 16),
    miscSelect: raw.readUInt32LE(16),
    attributes: raw.subarray(48, 64),
    mrEnclave: raw.subarray(64, 96),
    mrSigner: raw.subarray(128, 160),
    isvProdId: raw.readUInt16LE(256),
    isvSvn: raw.readUInt16LE(258),
    reportData: raw.subarray(320, 384),
  };
}

/** Decode a TD quote v4 or v5. Throws InvalidInputError (ERR_TD_QUOTE) naming the field. */
export function parseTdQuote(input: Uint8Array): TdQuote {
  const b = Buffer.from(input);
  if (b.length > MAX_QUOTE_BYTES) throw bad(`${b.length} bytes is more than the ${MAX_QUOTE_BYTES} a TD quote can be`);
  if (b.length < QUOTE_HEADER_SIZE) throw bad(`${b.length} bytes is shorter than the ${QUOTE_HEADER_SIZE}-byte header`);
  const c = new Cursor(b, 0, b.length);
  const header: QuoteHeader = {
    version: c.u16('header'),
    attestationKeyType: c.u16('header'),
    teeType: c.u32('header'),
    qeVendorId: (c.take(4, 'header'), c.take(16, 'header QE vendor id')),
    userData: c.take(20, 'header user data'),
  };
  if (header.version !== 4 && header.version !== 5) throw bad(`version ${header.version} is not 4 or 5`);
  if (header.teeType !== TDX_TEE_TYPE) {
    throw bad(`TEE type 0x${header.teeType.toString(16)} is not 0x81 (TDX)${header.teeType === 0 ? ': this is an SGX enclave quote' : ''}`);
  }
  if (header.attestationKeyType !== ATT_KEY_TYPE_ECDSA_P256) throw bad(`attestation key type ${header.attestationKeyType} is not 2 (ECDSA P-256)`);

  let bodySize = TD_BODY_10_SIZE;
  if (header.version === 5) {
    const type = c.u16('body descriptor');
    bodySize = c.u32('body descriptor');
    const expected = type === 2 ? TD_BODY_10_SIZE : type === 3 ? TD_BODY_15_SIZE : undefined;
    if (expected === undefined) throw bad(`v5 body type ${type} is not 2 (TD report 1.0) or 3 (TD report 1.5)`);
    if (bodySize !== expected) throw bad(`v5 body type ${type} declares ${bodySize} bytes, not ${expected}`);
  }
  const body = parseBody(c, bodySize);
  const signedBytes = Buffer.from(b.subarray(0, c.at));
  const sigLen = c.u32('signature data length');
  const sigEnd = c.at + sigLen;
  if (sigEnd > b.length) throw bad(`signature data length ${sigLen} runs past the end (${b.length - c.at} bytes left)`);
  const s = new Cursor(b, c.at, sigEnd);
  const signature = s.take(64, 'quote signature');
  const attestationKey = s.take(64, 'attestation key');
  const certType = s.u16('certification data type');
  const certSize = s.u32('certification data size');
  if (certType !== CERT_DATA_QE_REPORT) throw bad(`certification data type ${certType} is not 6 (QE report certification data)`);
  if (s.at + certSize !== sigEnd) throw bad(`certification data size ${certSize} does not fill the signature data (${sigEnd - s.at} bytes)`);
  const qeReport = parseQeReport(s.take(SGX_REPORT_BODY_SIZE, 'QE report'));
  const qeReportSignature = s.take(64, 'QE report signature');
  const qeAuthData = s.take(s.u16('QE authentication data size'), 'QE authentication data');
  const innerType = s.u16('inner certification data type');
  const innerSize = s.u32('inner certification data size');
  if (innerType !== CERT_DATA_PCK_CHAIN) {
    throw bad(`inner certification data type ${innerType} is not 5 (PCK certificate chain)${innerType >= 1 && innerType <= 4 ? ': an encrypted PPID needs Intel PCS to find the PCK certificate' : ''}`);
  }
  const pem = s.take(innerSize, 'PCK certificate chain');
  if (s.at !== sigEnd) throw bad(`${sigEnd - s.at} bytes left over inside the signature data`);
  const rest = b.subarray(sigEnd);
  if (rest.some((x) => x !== 0)) throw bad(`${rest.length} bytes follow the quote and they are not zero padding`);
  let end = pem.length;
  while (end > 0 && pem[end - 1] === 0) end--;
  return {
    raw: Buffer.from(b.subarray(0, sigEnd)),
    header,
    body,
    signedBytes,
    signature,
    attestationKey,
    qeReport,
    qeReportSignature,
    qeAuthData,
    pckChainPem: pem.subarray(0, end).toString('latin1'),
    trailingZeros: rest.length,
  };
}

export interface TdQuoteJson {
  header: { version: number; attestation_key_type: number; tee_type: string; qe_vendor_id: string; user_data: string };
  body: TdMeasurementsJson & { body_version: string; tee_tcb_svn2?: string; mr_service_td?: string };
  signature: string;
  attestation_key: string;
  qe_report: { cpu_svn: string; misc_select: number; attributes: string; mr_enclave: string; mr_signer: string; isv_prod_id: number; isv_svn: number; report_data: string };
  qe_report_signature: string;
  qe_auth_data: string;
  pck_chain_certificates: number;
  trailing_zero_bytes: number;
}

export function tdQuoteToJson(q: TdQuote): TdQuoteJson {
  const certs = (q.pckChainPem.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length;
  return {
    header: {
      version: q.header.version,
      attestation_key_type: q.header.attestationKeyType,
      tee_type: `0x${q.header.teeType.toString(16)}`,
      qe_vendor_id: toHex(q.header.qeVendorId),
      user_data: toHex(q.header.userData),
    },
    body: {
      body_version: q.body.bodyVersion,
      ...measurementsToJson(q.body),
      ...(q.body.teeTcbSvn2 ? { tee_tcb_svn2: toHex(q.body.teeTcbSvn2) } : {}),
      ...(q.body.mrServiceTd ? { mr_service_td: toHex(q.body.mrServiceTd) } : {}),
    },
    signature: toHex(q.signature),
    attestation_key: toHex(q.attestationKey),
    qe_report: {
      cpu_svn: toHex(q.qeReport.cpuSvn),
      misc_select: q.qeReport.miscSelect,
      attributes: toHex(q.qeReport.attributes),
      mr_enclave: toHex(q.qeReport.mrEnclave),
      mr_signer: toHex(q.qeReport.mrSigner),
      isv_prod_id: q.qeReport.isvProdId,
      isv_svn: q.qeReport.isvSvn,
      report_data: toHex(q.qeReport.reportData),
    },
    qe_report_signature: toHex(q.qeReportSignature),
    qe_auth_data: toHex(q.qeAuthData),
    pck_chain_certificates: certs,
    trailing_zero_bytes: q.trailingZeros,
  };
}
