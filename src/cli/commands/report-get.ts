import { existsSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { derToPem } from '../../certs/pem';
import { decodeBase64Strict } from '../../common/bytes';
import { detectEvidenceSource } from '../../snp/detect';
import type { EvidenceSource } from '../../snp/evidence';
import { Len, reportDataFor } from '../../snp/report';
import { SimulatedPlatform } from '../../snp/simulator';
import { CliError, type Out } from '../io';

export const usage =
  'skr report get [--runtime-data B64 | --report-data HEX] [--out FILE] [--certs-out FILE] [--simulate]\n' +
  '      take a report from the SEV-SNP device (or the simulator): REPORT_DATA = sha256(runtime data) + 32 zero bytes, as the\n' +
  '      sidecar binds it, or the given hex (up to 64 bytes, zero-padded); default all zeros. Prints hex, or writes binary to a new FILE.\n' +
  '      --certs-out writes the VCEK, ASK and ARK the host supplies with an extended report (PEM, for skr report verify --certs).\n' +
  '      --tpm /dev/tpmrm0|tcp:127.0.0.1:PORT [--imds URL]: on an Azure confidential VM, the HCL report refreshed with that REPORT_DATA as\n' +
  '      user data, as JSON like /attest/raw: {"report", "hcl_report"} on SEV-SNP, {"td_quote", "hcl_report"} on TDX (quote from IMDS)';

/** REPORT_DATA from the flags: the sidecar's runtime-data binding, raw hex, or zeros. */
export function reportDataFromFlags(runtimeData: string | undefined, reportData: string | undefined): Buffer {
  if (runtimeData !== undefined && reportData !== undefined) throw new CliError('give --runtime-data or --report-data, not both');
  if (runtimeData !== undefined) {
    const bytes = decodeBase64Strict(runtimeData.trim());
    if (!bytes) throw new CliError('--runtime-data is not base64 (standard or URL-safe alphabet)');
    return reportDataFor(bytes);
  }
  if (reportData !== undefined) {
    const hex = reportData.trim().replace(/^0x/i, '');
    if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new CliError('--report-data is not hex (an even number of hex digits)');
    if (hex.length > Len.reportData * 2) throw new CliError(`--report-data is ${hex.length / 2} bytes; REPORT_DATA holds ${Len.reportData}`);
    return Buffer.concat([Buffer.from(hex, 'hex'), Buffer.alloc(Len.reportData - hex.length / 2)]);
  }
  return Buffer.alloc(Len.reportData);
}

/** Evidence goes to new files only: never overwrite what was taken before. */
function newFile(path: string, data: string | Buffer, what: string): void {
  try {
    writeFileSync(path, data, { flag: 'wx', mode: 0o644 });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CliError(`cannot write the ${what} to ${path}: ${err.code === 'EEXIST' ? 'it exists (give a new file)' : (err.code ?? err.message)}`, 1);
  }
}

export async function reportGetCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      'runtime-data': { type: 'string' },
      'report-data': { type: 'string' },
      out: { type: 'string' },
      'certs-out': { type: 'string' },
      simulate: { type: 'boolean' },
      tpm: { type: 'string' },
      imds: { type: 'string' },
    },
  });
  if (positionals.length) throw new CliError(`unexpected argument "${positionals[0].slice(0, 64)}"\nusage: ${usage}`);
  const reportData = reportDataFromFlags(values['runtime-data'], values['report-data']);
  for (const f of [values.out, values['certs-out']]) {
    if (f !== undefined && existsSync(f)) throw new CliError(`${f} exists: the report and certificates go to new files`);
  }
  if (values.out !== undefined && values.out === values['certs-out']) throw new CliError('--out and --certs-out must be different files');
  if (values.tpm !== undefined) {
    if (values.simulate || values['certs-out'] !== undefined) throw new CliError('--tpm takes neither --simulate nor --certs-out (the CVM\'s chain comes from IMDS)');
    const json = await cvmReport(values.tpm, values.imds, reportData);
    if (values.out !== undefined) {
      newFile(values.out, json + '\n', 'report');
      io.err(`skr report get: wrote the HCL report${json.includes('td_quote') ? ' and its TD quote' : ''} to ${values.out}`);
    } else {
      io.out(json);
    }
    return 0;
  }
  if (values.imds !== undefined) throw new CliError('--imds is for --tpm (an Azure confidential VM)');
  const source: EvidenceSource = values.simulate ? new SimulatedPlatform().evidenceSource() : await detectEvidenceSource();
  const certsOut = values['certs-out'];
  const { report, certTable } = await source.getReport({ reportData, ...(certsOut !== undefined ? { extended: true } : {}) });
  if (certsOut !== undefined) {
    const pick = (kind: string) => certTable?.find((c) => c.kind === kind);
    const vcek = pick('vcek') ?? pick('vlek');
    const ask = pick('ask');
    const ark = pick('ark');
    if (!vcek || !ask || !ark) {
      throw new CliError(`${source.description} supplied no VCEK, ASK and ARK with the report; fetch them instead (skr report verify fetches the chain from AMD KDS)`, 1);
    }
    newFile(certsOut, [vcek, ask, ark].map((c) => derToPem(c.data)).join(''), 'certificates');
    io.err(`skr report get: wrote ${vcek.kind.toUpperCase()}, ASK and ARK to ${certsOut}`);
  }
  if (values.out !== undefined) {
    newFile(values.out, report, 'report');
    io.err(`skr report get: wrote the ${report.length}-byte report from ${source.description} to ${values.out}`);
  } else {
    io.out(report.toString('hex'));
  }
  if (values.simulate) io.err('skr report get: SIMULATED: signed by the test AMD chain that no relying party trusts (verify with --trust-simulator)');
  return 0;
}

/** The CVM's HCL report for REPORT_DATA (as user data) and, on TDX, its TD quote: the /attest/raw JSON. */
async function cvmReport(spec: string, imds: string | undefined, reportData: Buffer): Promise<string> {
  const { tpmTransport } = await import('../release-setup');
  const { TpmClient } = await import('../../tpm');
  const { VtpmEvidence } = await import('../../cvm/vtpm-evidence');
  const { HclEvidenceSource, TdQuoteEvidenceSource } = await import('../../cvm/hcl-evidence-source');
  const { fetchTdQuote } = await import('../../tdx/imds-quote');
  const tpm = new TpmClient(await tpmTransport(spec));
  try {
    const source = new TdQuoteEvidenceSource(new HclEvidenceSource(new VtpmEvidence(tpm)), (r) => fetchTdQuote(r, imds ? { baseUrl: imds } : {}));
    const e = await source.getReport({ reportData });
    const hcl = (e.hclReport ?? Buffer.alloc(0)).toString('hex');
    return JSON.stringify(e.tdQuote ? { td_quote: e.tdQuote.toString('hex'), hcl_report: hcl } : { report: e.report.toString('hex'), hcl_report: hcl });
  } finally {
    await tpm.close().catch(() => undefined);
  }
}
