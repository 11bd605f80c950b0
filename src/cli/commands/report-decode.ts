import { parseArgs } from 'node:util';
import { describePolicy, parseReport, reportToJson, type ReportJson } from '../../snp/report';
import { parseProduct, type DecodedTcb } from '../../snp/tcb';
import { CliError, readInput, type Out } from '../io';

export const usage = 'skr report decode FILE [--json] [--product Milan|Genoa|Turin]   print every field of a 1184-byte report (binary or hex)';

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

export async function reportDecodeCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { json: { type: 'boolean' }, product: { type: 'string' } } });
  if (positionals.length !== 1) throw new CliError(`usage: ${usage}`);
  const report = parseReport(reportBytesFromFile(await readInput(positionals[0], 'report')));
  const product = values.product ? parseProduct(values.product) : 'Milan';
  const j = reportToJson(report, product);
  if (values.json) io.out(JSON.stringify(j, null, 2));
  else for (const l of formatReport(j, report.policy)) io.out(l);
  return 0;
}
