/**
 * The body of `POST /attest/SevSnpVm` (PROTOCOLS §4), built by the sidecar and parsed by the MAA
 * emulator, so both sides share one definition of the format:
 *
 *   { "report": b64url(JSON{ "SnpReport": b64url(report), "VcekCertChain": b64url(VCEK PEM + chain PEM),
 *                            "Endorsements"?: b64url(JSON{ "Uvm": [b64url(COSE_Sign1)] }) }),
 *     "runtimeData": { "data": b64url(runtime bytes), "dataType": "JSON" },
 *     "nonce": <u64> }
 *
 * Encoding is base64url without padding. The reference sidecar pads (Go's base64.URLEncoding) and
 * MAA takes both, so the parser accepts both too.
 */
import { randomBytes } from 'node:crypto';
import { decodeBase64Strict } from '../common/bytes';
import { InvalidInputError } from '../common/errors';
import { pemCertificatesToDer } from '../certs/pem';
import { REPORT_SIZE } from '../snp/report';

export type RuntimeDataType = 'JSON' | 'Binary';

export interface SevSnpVmRequestInput {
  /** The 1184-byte ATTESTATION_REPORT. */
  report: Buffer;
  /** VCEK (or VLEK) certificate, PEM. */
  vcekPem: string;
  /** ASK + ARK, PEM. */
  chainPem: string;
  /** `reference-info-base64` as the security context provides it (standard base64 of the COSE_Sign1). */
  uvmEndorsementBase64?: string;
  /** The runtime data whose sha256 is in REPORT_DATA; must be JSON text (MAA only takes JSON here). */
  runtimeData: Buffer;
  /** Defaults to a random u64. */
  nonce?: bigint;
}

/** The request as JSON-ready parts; `nonce` stays a bigint because a u64 does not fit a JS number. */
export interface SevSnpVmRequest {
  report: string;
  runtimeData: { data: string; dataType: RuntimeDataType };
  nonce: bigint;
}

export interface ParsedSevSnpVmRequest {
  report: Buffer;
  /** VCEK PEM followed by the chain PEM, as sent. */
  vcekCertChainPem: string;
  /** Decoded COSE_Sign1 UVM endorsements (`Endorsements.Uvm`), possibly empty. */
  uvmEndorsements: Buffer[];
  runtimeData: Buffer;
  runtimeDataType: RuntimeDataType;
  /** The parsed runtime JSON when dataType is JSON (what MAA puts in `x-ms-runtime`). */
  runtimeJson?: unknown;
  /** initTimeData bytes when present and non-empty (the reference sends an empty one). */
  initTimeData?: Buffer;
  nonce?: bigint;
}

const U64_MAX = (1n << 64n) - 1n;

/**
 * URL-safe base64 WITH padding, as the reference sidecar sends it (Go's base64.URLEncoding): the
 * one form known to be accepted by the real service. The parser accepts both.
 */
function b64u(b: Uint8Array): string {
  const s = Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');
  return s + '='.repeat((4 - (s.length % 4)) % 4);
}

function bad(path: string, message: string, cause?: unknown): InvalidInputError {
  return new InvalidInputError('ERR_MAA_REQUEST', `SevSnpVm request ${path}: ${message}`, cause);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

function parseJsonText(bytes: Buffer, path: string): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (err) {
    throw bad(path, 'not valid UTF-8', err);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw bad(path, 'not valid JSON', err);
  }
}

export function buildSevSnpVmRequest(input: SevSnpVmRequestInput): SevSnpVmRequest {
  if (input.report.length !== REPORT_SIZE) throw bad('report', `SNP report is ${input.report.length} bytes, expected ${REPORT_SIZE}`);
  const vcekCount = pemCertificatesToDer(input.vcekPem, 'VCEK PEM').length;
  if (vcekCount !== 1) throw bad('VcekCertChain', `VCEK PEM holds ${vcekCount} certificates, expected 1`);
  if (pemCertificatesToDer(input.chainPem, 'chain PEM').length === 0) throw bad('VcekCertChain', 'chain PEM holds no certificate');
  // Concatenate as the reference does (THIM's vcekCert + certificateChain), with a newline if one is missing.
  const chainText = input.vcekPem.endsWith('\n') ? input.vcekPem + input.chainPem : `${input.vcekPem}\n${input.chainPem}`;

  const inner: Record<string, string> = { SnpReport: b64u(input.report), VcekCertChain: b64u(Buffer.from(chainText, 'utf8')) };
  if (input.uvmEndorsementBase64 !== undefined && input.uvmEndorsementBase64.trim() !== '') {
    const cose = decodeBase64Strict(input.uvmEndorsementBase64.replace(/\s+/g, ''));
    if (!cose || cose.length === 0) throw bad('Endorsements.Uvm', 'UVM endorsement (reference-info) is not base64');
    inner.Endorsements = b64u(Buffer.from(JSON.stringify({ Uvm: [b64u(cose)] }), 'utf8'));
  }

  parseJsonText(input.runtimeData, 'runtimeData');
  const nonce = input.nonce ?? randomBytes(8).readBigUInt64BE();
  if (nonce < 0n || nonce > U64_MAX) throw bad('nonce', 'must be an unsigned 64-bit integer');
  return {
    report: b64u(Buffer.from(JSON.stringify(inner), 'utf8')),
    runtimeData: { data: b64u(input.runtimeData), dataType: 'JSON' },
    nonce,
  };
}

/** JSON text of the request, with the u64 nonce written as an exact integer literal (as Go's encoder does). */
export function serializeSevSnpVmRequest(req: SevSnpVmRequest): string {
  const head = JSON.stringify({ report: req.report, runtimeData: req.runtimeData });
  return `${head.slice(0, -1)},"nonce":${req.nonce.toString(10)}}`;
}

function decodeB64Field(v: unknown, path: string, allowEmpty = false): Buffer {
  if (typeof v !== 'string') throw bad(path, `expected a base64url string, got ${v === null ? 'null' : typeof v}`);
  const b = decodeBase64Strict(v);
  if (!b) throw bad(path, 'not valid base64url');
  if (b.length === 0 && !allowEmpty) throw bad(path, 'is empty');
  return b;
}

function parseNonce(v: unknown): bigint | undefined {
  if (v === undefined || v === null) return undefined;
  let n: bigint;
  if (typeof v === 'bigint') n = v;
  else if (typeof v === 'number' && Number.isInteger(v)) n = BigInt(v);
  else if (typeof v === 'string' && /^\d{1,20}$/.test(v)) n = BigInt(v);
  else throw bad('nonce', 'must be an unsigned 64-bit integer');
  if (n < 0n || n > U64_MAX) throw bad('nonce', 'must be an unsigned 64-bit integer');
  return n;
}

function parseDataType(v: unknown, path: string): RuntimeDataType {
  // MAA documents the values as "Binary" and "JSON"; accept any letter case, report the canonical one.
  if (typeof v === 'string') {
    const l = v.toLowerCase();
    if (l === 'json') return 'JSON';
    if (l === 'binary') return 'Binary';
  }
  throw bad(path, `dataType must be "JSON" or "Binary", got ${JSON.stringify(v) ?? typeof v}`);
}

/**
 * Parse and check every layer of a SevSnpVm request body (an object from a JSON body parser, or
 * the JSON text itself). Any malformed part is an InvalidInputError (code ERR_MAA_REQUEST) naming it.
 */
export function parseSevSnpVmRequest(body: unknown): ParsedSevSnpVmRequest {
  if (typeof body === 'string' || Buffer.isBuffer(body)) body = parseJsonText(Buffer.from(body), 'body');
  if (!isPlainObject(body)) throw bad('body', 'must be a JSON object');

  const reportJson = parseJsonText(decodeB64Field(body.report, 'report'), 'report');
  if (!isPlainObject(reportJson)) throw bad('report', 'must encode a JSON object');
  const report = decodeB64Field(reportJson.SnpReport, 'report.SnpReport');
  if (report.length !== REPORT_SIZE) throw bad('report.SnpReport', `is ${report.length} bytes, expected ${REPORT_SIZE}`);

  const chainBytes = decodeB64Field(reportJson.VcekCertChain, 'report.VcekCertChain');
  let vcekCertChainPem: string;
  try {
    vcekCertChainPem = new TextDecoder('utf-8', { fatal: true }).decode(chainBytes);
  } catch (err) {
    throw bad('report.VcekCertChain', 'not valid UTF-8', err);
  }
  let certCount: number;
  try {
    certCount = pemCertificatesToDer(vcekCertChainPem, 'report.VcekCertChain').length;
  } catch (err) {
    throw bad('report.VcekCertChain', (err as Error).message, err);
  }
  if (certCount === 0) throw bad('report.VcekCertChain', 'holds no PEM certificate');

  const uvmEndorsements: Buffer[] = [];
  if (reportJson.Endorsements !== undefined && reportJson.Endorsements !== '') {
    const endorsements = parseJsonText(decodeB64Field(reportJson.Endorsements, 'report.Endorsements'), 'report.Endorsements');
    if (!isPlainObject(endorsements)) throw bad('report.Endorsements', 'must encode a JSON object');
    if (endorsements.Uvm !== undefined) {
      if (!Array.isArray(endorsements.Uvm)) throw bad('report.Endorsements.Uvm', 'must be an array');
      endorsements.Uvm.forEach((u, i) => uvmEndorsements.push(decodeB64Field(u, `report.Endorsements.Uvm[${i}]`)));
    }
  }

  if (!isPlainObject(body.runtimeData)) throw bad('runtimeData', 'must be an object {data, dataType}');
  const runtimeData = decodeB64Field(body.runtimeData.data, 'runtimeData.data', true);
  const runtimeDataType = parseDataType(body.runtimeData.dataType, 'runtimeData.dataType');
  const out: ParsedSevSnpVmRequest = { report, vcekCertChainPem, uvmEndorsements, runtimeData, runtimeDataType };
  if (runtimeDataType === 'JSON') out.runtimeJson = parseJsonText(runtimeData, 'runtimeData.data');

  if (body.initTimeData !== undefined) {
    if (!isPlainObject(body.initTimeData)) throw bad('initTimeData', 'must be an object {data, dataType}');
    const init = decodeB64Field(body.initTimeData.data ?? '', 'initTimeData.data', true);
    if (init.length > 0) out.initTimeData = init;
  }

  const nonce = parseNonce(body.nonce);
  if (nonce !== undefined) out.nonce = nonce;
  return out;
}
