import { parseArgs } from 'node:util';
import { looksLikePem, splitPem, derToPem } from '../../certs/pem';
import { TrustStore } from '../../certs/roots';
import { AMD_KDS_BASE, getOk, parseThimCertificates, thimToChain, decodeHostAmdCert } from '../../certs';
import type { AmdCertChain } from '../../certs/types';
import { verifyReport } from '../../certs/verify';
import { InvalidInputError, SkrError, UpstreamError, VerificationError } from '../../common/errors';
import { parseReport, reportProduct, type AttestationReport } from '../../snp/report';
import { parseProduct, tcbToHex, type Product } from '../../snp/tcb';
import { TEST_ONLY_ROOTS } from '../../snp/simulator';
import { CliError, readInput, type Out } from '../io';
import { parseRfc3339 } from '../time';
import { checkHclClaimsBinding, checkHclVmpl, parseHclReport } from '../../cvm/hcl';
import { hclBytesFromFile, reportBytesFromFile } from './report-decode';

export const usage =
  'skr report verify REPORT|HCL_REPORT --certs FILE [--chain FILE] [--product P] [--trust-root PEM]... [--trust-simulator] [--kds URL] [--at TIME]\n' +
  '      verify a report: --certs is THIM JSON, a PEM bundle (VCEK, ASK, ARK), or a lone VCEK (DER/PEM) with --chain ASK+ARK PEM\n' +
  '      (without --chain the chain is fetched from AMD KDS). The ARK must be one of AMD\'s pinned roots unless trusted explicitly.\n' +
  '      An Azure CVM HCL report ("HCLA" header) is checked first: hcl-claims-binding (REPORT_DATA = sha256 of the\n' +
  '      runtime claims, exact bytes), hcl-vmpl (VMPL 0), then its embedded report as above.\n' +
  '      Certificate validity is checked at --at (RFC 3339, e.g. 2025-06-01T12:00:00Z; default now). Exit 1 names the failing step.';

/**
 * Turn whatever --certs holds into a chain; `chainText` completes a lone VCEK. Nothing here reads the
 * VCEK's extensions: that waits until verifyReport has checked AMD's signature on it. `reportedTcb` stands
 * in for tcbm where the file carries none (verifyReport compares the VCEK's own TCB, never tcbm).
 */
export async function chainFromFiles(
  certs: Buffer,
  chainText: string | undefined,
  product: Product,
  kdsBase: string,
  reportedTcb: bigint,
): Promise<AmdCertChain> {
  const text = certs.toString('utf8').trim();
  if (text.startsWith('{')) return thimToChain(parseThimCertificates(text), 'file');
  if (!looksLikePem(certs) && /^[A-Za-z0-9+/=\s]+$/.test(text)) {
    // host-amd-cert-base64 from a security context.
    return thimToChain(decodeHostAmdCert(text), 'file');
  }
  const pems = looksLikePem(certs) ? splitPem(text, '--certs') : [derToPem(certs)];
  if (pems.length === 3) return { vcekPem: pems[0], chainPem: pems[1] + pems[2], tcbm: reportedTcb, source: 'file' };
  if (pems.length !== 1) {
    throw new VerificationError('chain-format', `chain-format: --certs holds ${pems.length} certificates: expected 1 (VCEK) or 3 (VCEK, ASK, ARK)`);
  }
  let chainPem = chainText;
  if (chainPem === undefined) {
    const url = `${kdsBase.replace(/\/+$/, '')}/vcek/v1/${product}/cert_chain`;
    process.stderr.write(`skr: no --chain given, fetching ${url}\n`);
    try {
      chainPem = (await getOk(url, 'amd-kds', {})).body.toString('utf8');
    } catch (e) {
      if (e instanceof UpstreamError) throw new VerificationError('chain-fetch', `chain-fetch: ${e.message} (give the ASK+ARK with --chain to work offline)`, e);
      throw e;
    }
  }
  const chain = splitPem(chainPem, '--chain');
  if (chain.length !== 2) throw new VerificationError('chain-format', `chain-format: --chain holds ${chain.length} certificates: expected ASK then ARK`);
  return { vcekPem: pems[0], chainPem: chain.join(''), tcbm: reportedTcb, source: 'file' };
}

/** Run `step` and turn a malformed-input error into a refusal at `name`. */
async function atStep<T>(name: string, step: () => T | Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (e) {
    if (e instanceof InvalidInputError) throw new VerificationError(name, `${name}: ${e.message}`, e);
    throw e;
  }
}

export async function reportVerifyCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      certs: { type: 'string' },
      chain: { type: 'string' },
      product: { type: 'string' },
      'trust-root': { type: 'string', multiple: true },
      'trust-simulator': { type: 'boolean' },
      kds: { type: 'string' },
      at: { type: 'string' },
    },
  });
  if (positionals.length !== 1 || !values.certs) throw new CliError(`usage: ${usage}`);
  const at = values.at !== undefined ? parseRfc3339(values.at, '--at') : undefined;
  const now = at ?? new Date();
  const validityAt = `certificate validity checked at ${now.toISOString()} (${at ? '--at' : 'now'})`;
  const forcedProduct = values.product ? parseProduct(values.product) : undefined;
  const reportInput = await readInput(positionals[0], 'report');
  const certsInput = await readInput(values.certs, 'certs');
  const chainText = values.chain ? (await readInput(values.chain, 'chain')).toString('utf8') : undefined;
  const extraRootsPem: string[] = [];
  for (const f of values['trust-root'] ?? []) extraRootsPem.push((await readInput(f, 'trust root')).toString('utf8'));
  if (values['trust-simulator']) for (const r of Object.values(TEST_ONLY_ROOTS)) extraRootsPem.push(r.arkPem);
  let trust: TrustStore;
  try {
    trust = new TrustStore({ extraRootsPem });
  } catch (e) {
    // --trust-root is configuration, not evidence: a usage error.
    if (e instanceof SkrError) throw new CliError(`--trust-root: ${e.message}`);
    throw e;
  }

  // From here on everything is the evidence under test: every refusal names its step.
  try {
    const hclBytes = hclBytesFromFile(reportInput);
    let hclLine = '';
    let reportBytes: Buffer;
    if (hclBytes) {
      const hcl = await atStep('hcl-format', () => parseHclReport(hclBytes));
      checkHclClaimsBinding(hcl.report, hcl.claimsBytes, hcl.varData.hashType);
      checkHclVmpl(hcl.report);
      hclLine = `HCL runtime claims (${hcl.claimsBytes.length} bytes) bound by REPORT_DATA, VMPL 0; `;
      reportBytes = hcl.snpReportBytes;
    } else {
      reportBytes = reportBytesFromFile(reportInput);
    }
    const report: AttestationReport = await atStep('report-format', () => parseReport(reportBytes));
    const product = forcedProduct ?? reportProduct(report);
    const chain = await atStep('chain-format', () =>
      chainFromFiles(certsInput, chainText, product, values.kds ?? AMD_KDS_BASE, report.reportedTcb));
    const v = verifyReport(reportBytes, chain, trust, { now });
    io.out(
      `OK: ${hclLine}report signed by VCEK of chip ${report.chipId.toString('hex').slice(0, 16)}… at TCB ${tcbToHex(v.vcekTcb)}, ` +
        `chained to ${v.chain.arkLabel} (${v.product}); ${validityAt}`,
    );
    return 0;
  } catch (e) {
    if (e instanceof VerificationError) {
      io.err(`FAILED at ${e.message} [${validityAt}]`);
      return 1;
    }
    throw e;
  }
}
