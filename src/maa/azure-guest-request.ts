/**
 * The body of `POST /attest/AzureGuest?api-version=2020-10-01` (CVM-PROTOCOL §4), built by the guest
 * and parsed by the MAA emulator so both sides share one definition:
 *
 *   { "AttestationInfo": base64url(JSON{ AttestationProtocolVersion "2.0", OSType, OSDistro, OSVersionMajor,
 *       OSVersionMinor, OSBuild, TcgLogs, ClientPayload, TpmInfo{...}, IsolationInfo{Type "SevSnp",
 *       Evidence{Proof: base64(JSON{SnpReport: base64url, VcekCertChain: base64}), RunTimeData: base64}} }) }
 *
 * On an Intel TDX CVM the isolation evidence is the TD quote itself (Microsoft's C++ client,
 * IsolationInfo::CreateTdxEvidence; the Python tools agree on the shape):
 *       IsolationInfo{Type "Tdx", Evidence{Proof: base64(TD quote), RunTimeData: base64(runtime claims)}}
 *
 * Encodings copy Microsoft's C++ client (standard base64 inside, base64url without padding outside);
 * the parser accepts either alphabet, as MAA does.
 */
import { decodeBase64Strict } from '../common/bytes';
import { InvalidInputError } from '../common/errors';
import { REPORT_SIZE } from '../snp/report';

export const AZURE_GUEST_PROTOCOL_VERSION = '2.0';
export const OS_BUILD = 'NotApplication';

export interface AzureGuestPcr {
  index: number;
  /** 32-byte SHA-256 PCR value. */
  digest: Buffer;
}

export interface AzureGuestRequestInput {
  os: { type: string; distro: string; versionMajor: number; versionMinor: number };
  /** Raw TCG event log; empty when unreadable (the C++ client tolerates that). */
  tcgLog?: Buffer;
  /** String values, sent base64-encoded and echoed by MAA as x-ms-runtime.client-payload. */
  clientPayload: Record<string, string>;
  tpm: {
    /** Whole content of NV 0x01C101D0 (DER certificate, zero padding included). */
    akCert: Buffer;
    /** TPM2B_PUBLIC of the AK, size prefix included. */
    akPub: Buffer;
    /** TPMS_ATTEST of the quote (no size prefix). */
    pcrQuote: Buffer;
    /** Raw RSASSA signature bytes. */
    pcrSignature: Buffer;
    pcrs: AzureGuestPcr[];
    /** TPM2B_PUBLIC of the ephemeral key, size prefix included. */
    encKeyPub: Buffer;
    encKeyCertifyInfo: Buffer;
    encKeyCertifyInfoSignature: Buffer;
  };
  isolation: SnpIsolation | TdxIsolation;
}

export interface SnpIsolation {
  /** The 1184-byte SNP report from the HCL report. */
  snpReport: Buffer;
  /** THIM vcekCert + certificateChain (PEM). */
  vcekCertChainPem: string;
  /** The exact runtime-claims bytes of the HCL report. */
  runtimeClaims: Buffer;
}

export interface TdxIsolation {
  /** The TD quote IMDS returned for the HCL report's TDREPORT. */
  tdQuote: Buffer;
  runtimeClaims: Buffer;
}

export function isTdxIsolation(i: SnpIsolation | TdxIsolation): i is TdxIsolation {
  return 'tdQuote' in i;
}

/** Microsoft's client caps TD quotes at 8 KiB. */
const MAX_TD_QUOTE = 8192;

const b64 = (b: Uint8Array | string) => Buffer.from(b as Uint8Array).toString('base64');

/** The AttestationInfo JSON object (exposed for tests). */
export function attestationInfo(i: AzureGuestRequestInput): Record<string, unknown> {
  const payload: Record<string, string> = {};
  for (const [k, v] of Object.entries(i.clientPayload)) payload[k] = b64(Buffer.from(v, 'utf8'));
  const iso = i.isolation;
  const isolationInfo = isTdxIsolation(iso)
    ? { Type: 'Tdx', Evidence: { Proof: b64(iso.tdQuote), RunTimeData: b64(iso.runtimeClaims) } }
    : {
        Type: 'SevSnp',
        Evidence: {
          Proof: b64(JSON.stringify({ SnpReport: iso.snpReport.toString('base64url'), VcekCertChain: b64(iso.vcekCertChainPem) })),
          RunTimeData: b64(iso.runtimeClaims),
        },
      };
  return {
    AttestationProtocolVersion: AZURE_GUEST_PROTOCOL_VERSION,
    OSType: b64(i.os.type),
    OSDistro: b64(i.os.distro),
    OSVersionMajor: i.os.versionMajor,
    OSVersionMinor: i.os.versionMinor,
    OSBuild: b64(OS_BUILD),
    TcgLogs: i.tcgLog ? b64(i.tcgLog) : '',
    ClientPayload: payload,
    TpmInfo: {
      AikCert: b64(i.tpm.akCert),
      AikPub: b64(i.tpm.akPub),
      PcrQuote: b64(i.tpm.pcrQuote),
      PcrSignature: b64(i.tpm.pcrSignature),
      EncKeyPub: b64(i.tpm.encKeyPub),
      EncKeyCertifyInfo: b64(i.tpm.encKeyCertifyInfo),
      EncKeyCertifyInfoSignature: b64(i.tpm.encKeyCertifyInfoSignature),
      PcrSet: i.tpm.pcrs.map((p) => p.index),
      PCRs: i.tpm.pcrs.map((p) => ({ Index: p.index, Digest: b64(p.digest) })),
    },
    IsolationInfo: isolationInfo,
  };
}

/** The request body as sent. */
export function serializeAzureGuestRequest(i: AzureGuestRequestInput): string {
  return JSON.stringify({ AttestationInfo: Buffer.from(JSON.stringify(attestationInfo(i)), 'utf8').toString('base64url') });
}

/** What the emulator reads out of a request (decoded bytes; the client payload as sent). */
export interface ParsedAzureGuestRequest {
  os: { type: string; distro: string; versionMajor: number; versionMinor: number; build: string };
  tcgLog: Buffer;
  /** Echoed verbatim (values still base64, as MAA echoes them). */
  clientPayload: Record<string, string>;
  tpm: AzureGuestRequestInput['tpm'] & { pcrSet: number[] };
  isolation: AzureGuestRequestInput['isolation'];
}

function bad(path: string, message: string, cause?: unknown): InvalidInputError {
  return new InvalidInputError('ERR_MAA_REQUEST', `AzureGuest request ${path}: ${message}`, cause);
}
function obj(v: unknown, path: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(path, 'must be a JSON object');
  return v as Record<string, unknown>;
}
function bytes(v: unknown, path: string, max: number, allowEmpty = false): Buffer {
  if (typeof v !== 'string') throw bad(path, 'must be a base64 string');
  if (v.length > Math.ceil((max * 4) / 3) + 4) throw bad(path, `is longer than ${max} bytes`);
  const b = decodeBase64Strict(v);
  if (!b) throw bad(path, 'is not valid base64');
  if (b.length === 0 && !allowEmpty) throw bad(path, 'is empty');
  return b;
}
function text(v: unknown, path: string, max = 256): string {
  const s = bytes(v, path, max).toString('utf8');
  // eslint-disable-next-line no-control-regex -- names must be printable
  if (/[\u0000-\u001f]/.test(s)) throw bad(path, 'contains control characters');
  return s;
}
function int(v: unknown, path: string): number {
  const n = typeof v === 'string' && /^\d{1,9}$/.test(v) ? Number(v) : v; // the Python client sends strings
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 1e9) throw bad(path, 'must be a non-negative integer');
  return n;
}
function parseJson(b: Buffer, path: string): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(b));
  } catch (e) {
    throw bad(path, 'is not UTF-8 JSON', e);
  }
}

/** Parse and bound every field of an AzureGuest body (already JSON-parsed). */
export function parseAzureGuestRequest(body: unknown): ParsedAzureGuestRequest {
  const outer = obj(body, 'body');
  const info = obj(parseJson(bytes(outer.AttestationInfo, 'AttestationInfo', 512 * 1024), 'AttestationInfo'), 'AttestationInfo');
  if (info.AttestationProtocolVersion !== AZURE_GUEST_PROTOCOL_VERSION) throw bad('AttestationProtocolVersion', `must be "${AZURE_GUEST_PROTOCOL_VERSION}"`);
  const os = {
    type: text(info.OSType, 'OSType'),
    distro: text(info.OSDistro, 'OSDistro'),
    versionMajor: int(info.OSVersionMajor, 'OSVersionMajor'),
    versionMinor: int(info.OSVersionMinor, 'OSVersionMinor'),
    build: text(info.OSBuild, 'OSBuild'),
  };
  if (os.versionMajor === 0) throw bad('OSVersionMajor', 'must not be 0');
  const tcgLog = info.TcgLogs === undefined || info.TcgLogs === '' ? Buffer.alloc(0) : bytes(info.TcgLogs, 'TcgLogs', 256 * 1024, true);
  const cp = obj(info.ClientPayload ?? {}, 'ClientPayload');
  const clientPayload: Record<string, string> = {};
  for (const [k, v] of Object.entries(cp)) {
    if (typeof v !== 'string' || v.length > 4096) throw bad(`ClientPayload.${k.slice(0, 40)}`, 'must be a string of at most 4096 characters');
    clientPayload[k] = v;
  }
  if (Object.keys(clientPayload).length > 32) throw bad('ClientPayload', 'has more than 32 members');
  const t = obj(info.TpmInfo, 'TpmInfo');
  const pcrSet = t.PcrSet;
  if (!Array.isArray(pcrSet) || pcrSet.length === 0 || pcrSet.length > 24) throw bad('TpmInfo.PcrSet', 'must be an array of 1..24 PCR indices');
  const set = pcrSet.map((p, i) => {
    const n = int(p, `TpmInfo.PcrSet[${i}]`);
    if (n > 23) throw bad(`TpmInfo.PcrSet[${i}]`, 'must be 0..23');
    return n;
  });
  const pcrList = t.PCRs;
  if (!Array.isArray(pcrList) || pcrList.length !== set.length) throw bad('TpmInfo.PCRs', 'must list one digest per PcrSet entry');
  const pcrs = pcrList.map((p, i) => {
    const o = obj(p, `TpmInfo.PCRs[${i}]`);
    const index = int(o.Index, `TpmInfo.PCRs[${i}].Index`);
    if (index !== set[i]) throw bad(`TpmInfo.PCRs[${i}].Index`, `is ${index}, PcrSet says ${set[i]}`);
    const digest = bytes(o.Digest, `TpmInfo.PCRs[${i}].Digest`, 32);
    if (digest.length !== 32) throw bad(`TpmInfo.PCRs[${i}].Digest`, 'must be a 32-byte SHA-256 value');
    return { index, digest };
  });
  const tpm = {
    akCert: bytes(t.AikCert, 'TpmInfo.AikCert', 8192),
    akPub: bytes(t.AikPub, 'TpmInfo.AikPub', 1024),
    pcrQuote: bytes(t.PcrQuote, 'TpmInfo.PcrQuote', 1024),
    pcrSignature: bytes(t.PcrSignature, 'TpmInfo.PcrSignature', 512),
    pcrs,
    pcrSet: set,
    encKeyPub: bytes(t.EncKeyPub, 'TpmInfo.EncKeyPub', 1024),
    encKeyCertifyInfo: bytes(t.EncKeyCertifyInfo, 'TpmInfo.EncKeyCertifyInfo', 1024),
    encKeyCertifyInfoSignature: bytes(t.EncKeyCertifyInfoSignature, 'TpmInfo.EncKeyCertifyInfoSignature', 512),
  };
  const iso = obj(info.IsolationInfo, 'IsolationInfo');
  if (iso.Type !== 'SevSnp' && iso.Type !== 'Tdx') throw bad('IsolationInfo.Type', `"${String(iso.Type).slice(0, 40)}" is not supported (SevSnp or Tdx)`);
  const ev = obj(iso.Evidence, 'IsolationInfo.Evidence');
  if (iso.Type === 'Tdx') {
    const tdQuote = bytes(ev.Proof, 'IsolationInfo.Evidence.Proof', MAX_TD_QUOTE);
    const runtimeClaims = bytes(ev.RunTimeData, 'IsolationInfo.Evidence.RunTimeData', 16 * 1024);
    return { os, tcgLog, clientPayload, tpm, isolation: { tdQuote, runtimeClaims } };
  }
  const proof = obj(parseJson(bytes(ev.Proof, 'IsolationInfo.Evidence.Proof', 64 * 1024), 'IsolationInfo.Evidence.Proof'), 'IsolationInfo.Evidence.Proof');
  const snpReport = bytes(proof.SnpReport, 'Proof.SnpReport', REPORT_SIZE);
  if (snpReport.length !== REPORT_SIZE) throw bad('Proof.SnpReport', `must be ${REPORT_SIZE} bytes, got ${snpReport.length}`);
  const vcekCertChainPem = bytes(proof.VcekCertChain, 'Proof.VcekCertChain', 32 * 1024).toString('utf8');
  const runtimeClaims = bytes(ev.RunTimeData, 'IsolationInfo.Evidence.RunTimeData', 16 * 1024);
  return { os, tcgLog, clientPayload, tpm, isolation: { snpReport, vcekCertChainPem, runtimeClaims } };
}
