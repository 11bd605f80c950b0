import { parseArgs } from 'node:util';
import { decodeBase64Strict } from '../../common/bytes';
import { hclToJson, isHclReport, parseHclReport, type HclReport } from '../../cvm/hcl';
import { describePolicy, parseReport, reportToJson, type ReportJson } from '../../snp/report';
import { parseProduct, type DecodedTcb } from '../../snp/tcb';
import { CliError, readInput, type Out } from '../io';
import { parseTdQuote, quoteKind, tdQuoteToJson } from '../../tdx/quote';
import { parseTdxHclReport, tdxHclToJson } from '../../cvm/hcl';
import { formatTdQuote, formatTdxHcl, tdxInputFromFile } from './tdx-report';

export const usage =
  'skr report decode FILE [--json] [--product Milan|Genoa|Turin]   print every field of a 1184-byte report (binary or hex),\n' +
  '      or of an Azure CVM HCL report (vTPM NV 0x01400001, "HCLA" header): header, embedded report, runtime claims';

/** Hex text of at most this many bytes is decoded (an HCL index is 2600 bytes; the parser caps at 8192). */
const MAX_HEX_BYTES = 16 * 1024;

/**
 * An HCL report arrives as the raw NV content, as hex, or in a sidecar answer on a CVM (`hcl_report`, hex,
 * of /attest/raw; `hcl_evidence`, base64, of /attest/combined). Undefined when the input is not one.
 */
export function hclBytesFromFile(data: Buffer): Buffer | undefined {
  if (isHclReport(data)) return data;
  const text = data.toString('latin1').trim();
  let hex: string | undefined;
  if (text.startsWith('{')) {
    try {
      const o = JSON.parse(text) as { hcl_report?: unknown; hcl_evidence?: unknown };
      if (typeof o.hcl_report === 'string') hex = o.hcl_report;
      else if (typeof o.hcl_evidence === 'string' && o.hcl_evidence.length <= MAX_HEX_BYTES * 2) {
        // /attest/combined carries it as base64 (strict: Buffer.from would skip what is not base64).
        const b = decodeBase64Strict(o.hcl_evidence);
        if (!b) throw new CliError('hcl_evidence is not valid base64');
        return isHclReport(b) ? b : undefined;
      }
    } catch (e) {
      if (e instanceof CliError) throw e;
      return undefined;
    }
  } else if (/^[0-9a-fA-F]+$/.test(text)) {
    hex = text;
  }
  if (hex === undefined || hex.length % 2 !== 0 || hex.length > MAX_HEX_BYTES * 2 || !/^[0-9a-fA-F]+$/.test(hex)) return undefined;
  const bytes = Buffer.from(hex, 'hex');
  return isHclReport(bytes) ? bytes : undefined;
}

/** Reports arrive as raw bytes (device, vectors) or hex (the /attest/raw answer): accept both. */
export function reportBytesFromFile(data: Buffer): Buffer {
  const text = data.toString('latin1').trim();
  if (data.length !== 1184 && /^[0-9a-fA-F]+$/.test(text) && text.length === 2368) return Buffer.from(text, 'hex');
  if (data.length !== 1184) {
    const json = tryJsonReport(text);
    if (json) return json;
  }
  return data;
}

function tryJsonReport(text: string): Buffer | undefined {
  if (!text.startsWith('{')) return undefined;
  try {
    const o = JSON.parse(text) as { report?: unknown; evidence?: unknown };
    if (typeof o.report === 'string' && /^[0-9a-fA-F]{2368}$/.test(o.report)) return Buffer.from(o.report, 'hex');
    if (typeof o.evidence === 'string') return Buffer.from(o.evidence, 'base64');
  } catch {
    return undefined;
  }
  return undefined;
}

function tcbLine(t: DecodedTcb): string {
  const parts = [`bootloader=${t.bootloader}`, `tee=${t.tee}`, `snp=${t.snp}`, `microcode=${t.microcode}`];
  if (t.fmc !== undefined) parts.unshift(`fmc=${t.fmc}`);
  return `0x${t.raw} (${parts.join(' ')})`;
}

export function formatReport(j: ReportJson, policyRaw: bigint): string[] {
  const p = describePolicy(policyRaw);
  const rows: [string, string][] = [
    ['version', String(j.version)],
    ['product', j.product + (j.cpuid ? ` (cpuid family 0x${j.cpuid.family.toString(16)} model 0x${j.cpuid.model.toString(16)} stepping ${j.cpuid.stepping})` : ' (assumed: v2 reports carry no CPUID)')],
    ['guest_svn', String(j.guestSvn)],
    ['policy', `0x${policyRaw.toString(16)} (abi ${p.abiMajor}.${p.abiMinor}, smt ${p.smt ? 'allowed' : 'not allowed'}, migration agent ${p.migrateMa ? 'allowed' : 'not allowed'}, debug ${p.debug ? 'ALLOWED' : 'not allowed'}${p.singleSocket ? ', single socket' : ''})`],
    ['family_id', j.familyId],
    ['image_id', j.imageId],
    ['vmpl', String(j.vmpl)],
    ['signature_algo', `${j.signatureAlgo}${j.signatureAlgo === 1 ? ' (ECDSA P-384 with SHA-384)' : ' (unknown)'}`],
    ['current_tcb', tcbLine(j.currentTcb)],
    ['platform_info', `0x${BigInt(j.platformInfo).toString(16)}`],
    ['signer_info', `0x${j.signerInfo.toString(16)}`],
    ['report_data', j.reportData],
    ['measurement', j.measurement],
    ['host_data', j.hostData],
    ['id_key_digest', j.idKeyDigest],
    ['author_key_digest', j.authorKeyDigest],
    ['report_id', j.reportId],
    ['report_id_ma', j.reportIdMa],
    ['reported_tcb', tcbLine(j.reportedTcb)],
    ['chip_id', j.chipId],
    ['committed_tcb', tcbLine(j.committedTcb)],
    ['current_version', j.currentVersion],
    ['committed_version', j.committedVersion],
    ['launch_tcb', tcbLine(j.launchTcb)],
    ['signature.r', j.signature.r],
    ['signature.s', j.signature.s],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`);
}

/** The claims as printed are bounded too (their depth is, by the parser): a hostile report cannot flood the terminal. */
export const MAX_CLAIMS_OUTPUT_CHARS = 64 * 1024;

function claimsLines(claims: unknown): string[] {
  const text = JSON.stringify(claims, null, 2);
  const shown = text.length > MAX_CLAIMS_OUTPUT_CHARS ? text.slice(0, MAX_CLAIMS_OUTPUT_CHARS) : text;
  const lines = shown.split('\n').map((l) => `  ${l}`);
  if (shown.length < text.length) lines.push(`  ... (${text.length - shown.length} more characters not shown; --json prints them)`);
  return lines;
}

/** The HCL view: its header, the embedded report's rows, then the runtime claims (exact JSON, indented). */
export function formatHcl(hcl: HclReport, product: Parameters<typeof hclToJson>[1]): string[] {
  const j = hclToJson(hcl, product);
  const h = j.header;
  const v = j.varData;
  return [
    'HCL report (Azure confidential VM, vTPM NV 0x01400001)',
    `  header       signature ${h.signature}, version ${h.version}, report size ${h.reportSize}, request type ${h.requestType}, status ${h.status}`,
    `  var data     size ${v.dataSize}, version ${v.version}, report type ${v.reportType} (SEV-SNP), hash type ${v.hashType}, claims ${v.claimsSize} bytes`,
    `  report_data  at offset ${j.reportDataOffset} of the HCL report (must be the hash of the runtime claims)`,
    '',
    'embedded SEV-SNP report:',
    ...formatReport(j.report, hcl.report.policy).map((l) => `  ${l}`),
    '',
    'runtime claims:',
    ...claimsLines(j.claims),
  ];
}

export async function reportDecodeCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { json: { type: 'boolean' }, product: { type: 'string' } } });
  if (positionals.length !== 1) throw new CliError(`usage: ${usage}`);
  const input = await readInput(positionals[0], 'report');
  const product = values.product ? parseProduct(values.product) : 'Milan';
  const tdx = tdxInputFromFile(input);
  if (tdx) {
    const quote = tdx.quote ? parseTdQuote(tdx.quote) : undefined;
    const hcl = tdx.hcl ? parseTdxHclReport(tdx.hcl) : undefined;
    if (values.json) {
      io.out(JSON.stringify({ ...(quote ? { td_quote: tdQuoteToJson(quote) } : {}), ...(hcl ? { hcl_report: tdxHclToJson(hcl) } : {}) }, null, 2));
      return 0;
    }
    if (quote) for (const l of formatTdQuote(quote)) io.out(l);
    if (quote && hcl) io.out('');
    if (hcl) for (const l of formatTdxHcl(hcl)) io.out(l);
    return 0;
  }
  if (quoteKind(input) === 'sgx') throw new CliError('this is an Intel SGX enclave quote (DCAP v4/v5, TEE type 0): not a report this tool decodes');
  const hclBytes = hclBytesFromFile(input);
  if (hclBytes) {
    const hcl = parseHclReport(hclBytes);
    if (values.json) io.out(JSON.stringify(hclToJson(hcl, product), null, 2));
    else for (const l of formatHcl(hcl, product)) io.out(l);
    return 0;
  }
  const report = parseReport(reportBytesFromFile(input));
  const j = reportToJson(report, product);
  if (values.json) io.out(JSON.stringify(j, null, 2));
  else for (const l of formatReport(j, report.policy)) io.out(l);
  return 0;
}
