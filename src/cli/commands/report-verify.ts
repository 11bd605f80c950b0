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
import { checkClaimsBinding, parseTdxHclReport, type TdxHclReport } from '../../cvm/hcl';
import { parseTdQuote, quoteKind, type TdQuote } from '../../tdx/quote';
import { IntelTrustStore } from '../../tdx/roots';
import { checkTdReportBinding, checkTdReportHashes, verifyTdQuote } from '../../tdx/verify';
import { TEST_ONLY_INTEL_ROOT_PEM } from '../../tdx/simulator/chain';
import { tcbCheckedLine, tcbNotChecked, tdxInputFromFile, verifiedQuoteLine, type TdxInput } from './tdx-report';
import { MAX_COLLATERAL_DOC_BYTES, type TdxCollateral } from '../../tdx/collateral';
import { TdxCollateralSource } from '../../tdx/collateral-source';

export const usage =
  'skr report verify REPORT|HCL_REPORT --certs FILE [--chain FILE] [--product P] [--trust-root PEM]... [--trust-simulator] [--kds URL] [--at TIME]\n' +
  '      [TDX: --intel-pcs URL [--tdx-cache DIR] | --tcb-info FILE --qe-identity FILE --tcb-issuer-chain PEM]\n' +
  '      verify a report: --certs is THIM JSON, a PEM bundle (VCEK, ASK, ARK), or a lone VCEK (DER/PEM) with --chain ASK+ARK PEM\n' +
  '      (without --chain the chain is fetched from AMD KDS). The ARK must be one of AMD\'s pinned roots unless trusted explicitly.\n' +
  '      An Azure CVM HCL report ("HCLA" header) is checked first: hcl-claims-binding (REPORT_DATA = sha256 of the\n' +
  '      runtime claims, exact bytes), hcl-vmpl (VMPL 0), then its embedded report as above.\n' +
  '      Intel TDX: a TD quote (no --certs: its PCK chain is inside) is checked at pck-chain, intel-root-pinned (the pinned\n' +
  '      Intel SGX Root CA), qe-report-signature, qe-report-binding, td-quote-signature; a TDX HCL report needs its quote\n' +
  '      (in the same JSON, or --td-quote FILE): hcl-claims-binding, tdreport-hashes, td-report-binding. TCB status is checked\n' +
  '      only with Intel\'s collateral: fetched from --intel-pcs (Intel PCS v4 API root, or a cache serving it; kept in\n' +
  '      --tdx-cache until nextUpdate) or read from files (bodies as served; the TCB signing chain PEM): tcb-info-chain,\n' +
  '      tcb-info-signature, tcb-info-expired, tcb-info-fmspc, qe-identity-*, tcb-level, tdx-module, qe-identity, tcb-status.\n' +
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
      'td-quote': { type: 'string' },
      'intel-pcs': { type: 'string' },
      'tdx-cache': { type: 'string' },
      'tcb-info': { type: 'string' },
      'qe-identity': { type: 'string' },
      'tcb-issuer-chain': { type: 'string' },
    },
  });
  if (positionals.length !== 1) throw new CliError(`usage: ${usage}`);
  const at = values.at !== undefined ? parseRfc3339(values.at, '--at') : undefined;
  const now = at ?? new Date();
  const validityAt = `certificate validity checked at ${now.toISOString()} (${at ? '--at' : 'now'})`;
  const first = await readInput(positionals[0], 'report');
  const tdx = tdxInputFromFile(first);
  if (tdx || values['td-quote'] !== undefined) {
    const extra = values['td-quote'] !== undefined ? tdxInputFromFile(await readInput(values['td-quote'], 'TD quote')) : undefined;
    if (values['td-quote'] !== undefined && !extra?.quote) throw new CliError('--td-quote: no Intel TDX quote (v4/v5, TEE type 0x81) in that file');
    const intelRoots: string[] = [];
    for (const f of values['trust-root'] ?? []) intelRoots.push((await readInput(f, 'trust root')).toString('utf8'));
    if (values['trust-simulator']) intelRoots.push(TEST_ONLY_INTEL_ROOT_PEM);
    const trust = trustRoots(() => new IntelTrustStore({ extraRootsPem: intelRoots }));
    return verifyTdx({ quote: extra?.quote ?? tdx?.quote, hcl: tdx?.hcl }, trust, now, validityAt, io, await tcbCollateralOption(values));
  }
  if (quoteKind(first) === 'sgx') throw new CliError('this is an Intel SGX enclave quote (DCAP v4/v5, TEE type 0): not a report this tool verifies');
  if (!values.certs) throw new CliError(`usage: ${usage}`);
  const forcedProduct = values.product ? parseProduct(values.product) : undefined;
  const reportInput = first;
  const certsInput = await readInput(values.certs, 'certs');
  const chainText = values.chain ? (await readInput(values.chain, 'chain')).toString('utf8') : undefined;
  const extraRootsPem: string[] = [];
  for (const f of values['trust-root'] ?? []) extraRootsPem.push((await readInput(f, 'trust root')).toString('utf8'));
  if (values['trust-simulator']) for (const r of Object.values(TEST_ONLY_ROOTS)) extraRootsPem.push(r.arkPem);
  const trust = trustRoots(() => new TrustStore({ extraRootsPem }));

  // From here on everything is the evidence under test: every refusal names its step.
  return verdict(io, validityAt, async () => {
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
    return `${hclLine}report signed by VCEK of chip ${report.chipId.toString('hex').slice(0, 16)}… at TCB ${tcbToHex(v.vcekTcb)}, ` +
      `chained to ${v.chain.arkLabel} (${v.product})`;
  });
}

/** --trust-root is configuration, not evidence: a store that cannot be built is a usage error. */
function trustRoots<T>(make: () => T): T {
  try {
    return make();
  } catch (e) {
    if (e instanceof SkrError) throw new CliError(`--trust-root: ${e.message}`);
    throw e;
  }
}

/** `OK: <what verified>; <validity>` and exit 0, or `FAILED at <step>: …` and exit 1. */
async function verdict(io: Out, validityAt: string, check: () => Promise<string>): Promise<number> {
  try {
    io.out(`OK: ${await check()}; ${validityAt}`);
    return 0;
  } catch (e) {
    if (e instanceof VerificationError) {
      io.err(`FAILED at ${e.message} [${validityAt}]`);
      return 1;
    }
    throw e;
  }
}

/** Where Intel's collateral comes from, if the operator allowed any: a PCS-shaped URL, or files. */
type CollateralOption = { fetch: TdxCollateralSource } | { files: TdxCollateral } | undefined;

async function tcbCollateralOption(v: { 'intel-pcs'?: string; 'tdx-cache'?: string; 'tcb-info'?: string; 'qe-identity'?: string; 'tcb-issuer-chain'?: string }): Promise<CollateralOption> {
  const files = [v['tcb-info'], v['qe-identity'], v['tcb-issuer-chain']];
  if (v['intel-pcs'] !== undefined) {
    if (files.some((f) => f !== undefined)) throw new CliError('--intel-pcs fetches the collateral: do not also give --tcb-info/--qe-identity/--tcb-issuer-chain');
    let base: URL;
    try {
      base = new URL(v['intel-pcs']);
    } catch {
      throw new CliError('--intel-pcs: not a URL (e.g. https://api.trustedservices.intel.com/tdx/certification/v4)');
    }
    if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new CliError('--intel-pcs: an http(s) URL');
    return { fetch: new TdxCollateralSource({ baseUrl: base.toString(), ...(v['tdx-cache'] !== undefined ? { cacheDir: v['tdx-cache'] } : {}), retries: 1 }) };
  }
  if (v['tdx-cache'] !== undefined) throw new CliError('--tdx-cache keeps what --intel-pcs fetches: give --intel-pcs too');
  if (files.every((f) => f === undefined)) return undefined;
  if (files.some((f) => f === undefined)) throw new CliError('offline TCB check: give all of --tcb-info FILE --qe-identity FILE --tcb-issuer-chain PEM');
  const text = async (f: string, what: string) => {
    const b = await readInput(f, what);
    if (b.length > MAX_COLLATERAL_DOC_BYTES) throw new CliError(`${what} ${f}: over ${MAX_COLLATERAL_DOC_BYTES} bytes`);
    return b.toString('utf8');
  };
  const chainText = (await text(v['tcb-issuer-chain'] as string, 'TCB issuer chain')).trim();
  // As the PCS header carries it (URL-encoded; PEM itself never holds '%') or plain PEM.
  let issuerChainPem = chainText;
  if (chainText.includes('%')) {
    try {
      issuerChainPem = decodeURIComponent(chainText);
    } catch {
      throw new CliError('--tcb-issuer-chain: neither PEM nor URL-encoded PEM');
    }
  }
  return {
    files: {
      tcbInfo: { body: await text(v['tcb-info'] as string, 'TCB info'), issuerChainPem },
      qeIdentity: { body: await text(v['qe-identity'] as string, 'QE identity'), issuerChainPem },
      source: 'files',
    },
  };
}

/**
 * TD quote alone, or TDX HCL report + its quote: every refusal names its step. With collateral the TCB
 * status is evaluated (Revoked refused); without, the verdict says plainly that it was not checked.
 */
async function verifyTdx(input: TdxInput, trust: IntelTrustStore, now: Date, validityAt: string, io: Out, tcbSource?: CollateralOption): Promise<number> {
  if (!input.quote) {
    throw new CliError('a TDX HCL report is verified through the TD quote of its TDREPORT: give it with --td-quote FILE (raw, hex, base64, or the IMDS /acc/tdquote answer)');
  }
  const quoteBytes = input.quote;
  return verdict(io, validityAt, async () => {
    const quote: TdQuote = await atStep('quote-format', () => parseTdQuote(quoteBytes));
    let hcl: TdxHclReport | undefined;
    if (input.hcl) {
      const hclBytes = input.hcl;
      hcl = await atStep('hcl-format', () => parseTdxHclReport(hclBytes));
      checkClaimsBinding(hcl.tdReport.reportData, hcl.claimsBytes, hcl.varData.hashType);
      checkTdReportHashes(hcl.tdReport);
    }
    let v = verifyTdQuote(quote, { trust, now });
    let collateralSource: string | undefined;
    if (hcl) checkTdReportBinding(quote, hcl.tdReport);
    if (tcbSource) {
      let collateral: TdxCollateral;
      if ('files' in tcbSource) {
        collateral = tcbSource.files;
      } else {
        const fmspc = v.pckInfo.fmspc;
        if (!fmspc) throw new VerificationError('tcb-info-fmspc', 'tcb-info-fmspc: the PCK certificate names no FMSPC, so no TCB info can be fetched');
        try {
          collateral = await tcbSource.fetch.get(fmspc);
        } catch (e) {
          if (e instanceof UpstreamError) throw new VerificationError('tcb-collateral-fetch', `tcb-collateral-fetch: ${e.message}`, e);
          throw e;
        }
      }
      collateralSource = collateral.source;
      try {
        v = verifyTdQuote(quote, { trust, now, collateral });
      } catch (e) {
        // A fetched copy that no longer verifies (expired, damaged on disk) is not kept for the next run.
        if ('fetch' in tcbSource && e instanceof VerificationError && /^(tcb-info|qe-identity)-/.test(e.step) && v.pckInfo.fmspc) tcbSource.fetch.invalidate(v.pckInfo.fmspc);
        throw e;
      }
    }
    const hclLine = hcl ? `HCL runtime claims (${hcl.claimsBytes.length} bytes) bound by REPORTDATA, TDREPORT hashes consistent, TDREPORT = the quote's TD report body; ` : '';
    return `${hclLine}${verifiedQuoteLine(v)}; ${v.tcb ? tcbCheckedLine(v.tcb, v.tcbStatus, collateralSource) : tcbNotChecked(v)}`;
  });
}
