/**
 * TDX evidence for `skr report decode|verify`: a TD quote (raw, hex, base64, or inside JSON) and/or a TDX
 * HCL report. JSON shapes accepted: the sidecar's TDX answers (`td_quote` + `hcl_report`/`hcl_evidence`),
 * IMDS's `/acc/tdquote` answer (`quote`/`Quote`), and trustee's `az-tdx-vtpm` evidence documents
 * (`td_quote`, `hcl_report` as byte arrays or base64url).
 */
import { decodeBase64Strict, fromHexStrict } from '../../common/bytes';
import { hclTeeOf, tdxHclToJson, type TdxHclReport } from '../../cvm/hcl';
import { MAX_QUOTE_BYTES, quoteKind, tdQuoteToJson, type TdQuote } from '../../tdx/quote';
import { tdReportToJson, type TdMeasurementsJson } from '../../tdx/tdreport';
import type { VerifiedTdQuote } from '../../tdx/verify';
import type { TdxTcbEvaluation } from '../../tdx/tcb';
import { pcsTcbInfoUrl } from '../../tdx/pck';

export interface TdxInput {
  quote?: Buffer;
  hcl?: Buffer;
}

/** Evidence files are small; anything larger is not one of these shapes. */
const MAX_TEXT = 64 * 1024;

function bytesOf(v: unknown, accept: (b: Buffer) => boolean): Buffer | undefined {
  let candidates: (Buffer | undefined)[] = [];
  if (typeof v === 'string' && v.length <= MAX_TEXT) candidates = [fromHexStrict(v), decodeBase64Strict(v)];
  else if (Array.isArray(v) && v.length <= MAX_QUOTE_BYTES && v.every((x) => Number.isInteger(x) && x >= 0 && x <= 255)) candidates = [Buffer.from(v as number[])];
  return candidates.find((b): b is Buffer => b !== undefined && accept(b));
}

const isTdx = (b: Buffer) => quoteKind(b) === 'tdx';
const isTdxHcl = (b: Buffer) => hclTeeOf(b) === 'tdx';

/** TDX evidence in `data`, or undefined when it holds none (then it is SEV-SNP material or nothing). */
export function tdxInputFromFile(data: Buffer): TdxInput | undefined {
  if (isTdx(data)) return { quote: data };
  if (isTdxHcl(data)) return { hcl: data };
  if (data.length > MAX_TEXT) return undefined;
  const text = data.toString('latin1').trim();
  if (text.startsWith('{')) {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return undefined;
    }
    if (typeof o !== 'object' || o === null) return undefined;
    const quote = bytesOf(o['td_quote'] ?? o['quote'] ?? o['Quote'], isTdx);
    const hcl = bytesOf(o['hcl_report'] ?? o['hcl_evidence'], isTdxHcl);
    return quote || hcl ? { ...(quote ? { quote } : {}), ...(hcl ? { hcl } : {}) } : undefined;
  }
  const quote = bytesOf(text, isTdx);
  if (quote) return { quote };
  const hcl = bytesOf(text, isTdxHcl);
  return hcl ? { hcl } : undefined;
}

function rows(pairs: [string, string][], indent = ''): string[] {
  const w = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${indent}${k.padEnd(w)}  ${v}`);
}

function measurementRows(m: TdMeasurementsJson): [string, string][] {
  return [
    ['tee_tcb_svn', m.tee_tcb_svn],
    ['mr_seam', m.mr_seam],
    ['mr_signer_seam', m.mr_signer_seam],
    ['seam_attributes', m.seam_attributes],
    ['td_attributes', `${m.td_attributes}${m.debug ? ' (DEBUG: the host can read this TD)' : ''}`],
    ['xfam', m.xfam],
    ['mr_td', m.mr_td],
    ['mr_config_id', m.mr_config_id],
    ['mr_owner', m.mr_owner],
    ['mr_owner_config', m.mr_owner_config],
    ['rtmr0', m.rtmr0],
    ['rtmr1', m.rtmr1],
    ['rtmr2', m.rtmr2],
    ['rtmr3', m.rtmr3],
    ['report_data', m.report_data],
  ];
}

export function formatTdQuote(q: TdQuote): string[] {
  const j = tdQuoteToJson(q);
  return [
    `Intel TDX quote v${j.header.version} (TEE type ${j.header.tee_type}, attestation key type ${j.header.attestation_key_type} = ECDSA P-256, TD report body ${j.body.body_version})`,
    ...rows([
      ['qe_vendor_id', `${j.header.qe_vendor_id}${j.header.qe_vendor_id === '939a7233f79c4ca9940a0db3957f0607' ? ' (Intel)' : ''}`],
      ['user_data', j.header.user_data],
    ], '  '),
    '',
    'TD report body:',
    ...rows([...measurementRows(j.body), ...(j.body.tee_tcb_svn2 ? ([['tee_tcb_svn2', j.body.tee_tcb_svn2]] as [string, string][]) : []), ...(j.body.mr_service_td ? ([['mr_service_td', j.body.mr_service_td]] as [string, string][]) : [])], '  '),
    '',
    'signature data:',
    ...rows([
      ['signature', j.signature],
      ['attestation_key', j.attestation_key],
      ['qe_report.mr_enclave', j.qe_report.mr_enclave],
      ['qe_report.mr_signer', j.qe_report.mr_signer],
      ['qe_report.isv_prod_id', String(j.qe_report.isv_prod_id)],
      ['qe_report.isv_svn', String(j.qe_report.isv_svn)],
      ['qe_report.report_data', j.qe_report.report_data],
      ['qe_report_signature', j.qe_report_signature],
      ['qe_auth_data', j.qe_auth_data],
      ['pck_chain', `${j.pck_chain_certificates} PEM certificates (certification data type 5)`],
      ...(j.trailing_zero_bytes ? ([['padding', `${j.trailing_zero_bytes} zero bytes after the quote`]] as [string, string][]) : []),
    ], '  '),
  ];
}

export function formatTdxHcl(hcl: TdxHclReport): string[] {
  const j = tdxHclToJson(hcl);
  const t = tdReportToJson(hcl.tdReport);
  const h = j.header;
  const v = j.varData;
  return [
    'HCL report (Azure confidential VM, vTPM NV 0x01400001)',
    `  header       signature ${h.signature}, version ${h.version}, report size ${h.reportSize}, request type ${h.requestType}, status ${h.status}`,
    `  var data     size ${v.dataSize}, version ${v.version}, report type ${v.reportType} (TDX), hash type ${v.hashType}, claims ${v.claimsSize} bytes`,
    `  report_data  at offset ${j.reportDataOffset} of the HCL report (must be the hash of the runtime claims)`,
    '',
    'embedded TDREPORT (1024 bytes; its MAC is for the CPU only: verify it through the TD quote):',
    ...rows([
      ['report_type', `type 0x${t.report_type.type.toString(16)}, subtype ${t.report_type.subtype}, version ${t.report_type.version}`],
      ['cpu_svn', t.cpu_svn],
      ['tee_tcb_info_hash', `${t.tee_tcb_info_hash} (${t.hashes_match.tee_tcb_info ? 'matches' : 'DOES NOT MATCH'} sha384(TEE_TCB_INFO))`],
      ['tee_info_hash', `${t.tee_info_hash} (${t.hashes_match.td_info ? 'matches' : 'DOES NOT MATCH'} sha384(TDINFO))`],
      ...measurementRows(t),
      ['servtd_hash', t.servtd_hash],
      ['mac', t.mac],
    ], '  '),
    '',
    'runtime claims:',
    ...JSON.stringify(j.claims, null, 2).split('\n').map((l) => `  ${l}`),
  ];
}

export function verifiedQuoteLine(v: VerifiedTdQuote): string {
  return (
    `TD quote v${v.quote.header.version} signed by its attestation key, bound by the QE report, which PCK certificate "${/CN=([^\n]*)/.exec(v.pck.subject)?.[1] ?? '?'}" signs, ` +
    `chained to ${v.rootLabel} (sha256 ${v.rootSha256.slice(0, 16)}…); MRTD ${v.quote.body.mrTd.toString('hex').slice(0, 16)}…`
  );
}

export const TCB_NOT_CHECKED = 'TCB status NOT checked (needs Intel PCS collateral: TCB info for the FMSPC and QE identity; --intel-pcs URL or --tcb-info/--qe-identity files)';

/** The TCB sentence when Intel's collateral was verified and evaluated. */
export function tcbCheckedLine(t: TdxTcbEvaluation, status: string, source?: string): string {
  const parts = [
    `platform ${t.platformStatus}, TDX module ${t.moduleStatus}, QE ${t.qeStatus}`,
    `FMSPC ${t.fmspc}, TCB date ${t.tcbDate}, TCB evaluation data number ${t.tcbEvaluationDataNumber}`,
    `advisories: ${t.advisoryIds.length ? t.advisoryIds.join(', ') : 'none'}`,
    `collateral${source ? ` from ${source}` : ''} valid until ${t.collateralNextUpdate.toISOString()}`,
  ];
  return `TCB status ${status} (${parts.join('; ')})`;
}

/** The TCB sentence of a verdict, naming the FMSPC and where its TCB info is when the PCK certificate says. */
export function tcbNotChecked(v: VerifiedTdQuote): string {
  const f = v.pckInfo.fmspc;
  return f ? `${TCB_NOT_CHECKED.slice(0, -1)}; FMSPC ${f}: ${pcsTcbInfoUrl(f)})` : TCB_NOT_CHECKED;
}
