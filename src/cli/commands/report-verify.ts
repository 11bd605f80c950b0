import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { looksLikePem, splitPem, derToPem } from '../../certs/pem';
import { TrustStore } from '../../certs/roots';
import { AMD_KDS_BASE, getOk, parseThimCertificates, thimToChain, decodeHostAmdCert, readVcekExtensions } from '../../certs';
import type { AmdCertChain } from '../../certs/types';
import { verifyReport } from '../../certs/verify';
import { VerificationError } from '../../common/errors';
import { parseReport, reportProduct } from '../../snp/report';
import { parseProduct, tcbToHex, type Product } from '../../snp/tcb';
import { TEST_ONLY_ROOTS } from '../../snp/simulator';
import { CliError, readInput, type Out } from '../io';
import { reportBytesFromFile } from './report-decode';

export const usage =
  'skr report verify REPORT --certs FILE [--chain FILE] [--product P] [--trust-root PEM]... [--trust-simulator] [--kds URL]\n' +
  '      verify a report: --certs is THIM JSON, a PEM bundle (VCEK, ASK, ARK), or a lone VCEK (DER/PEM) with --chain ASK+ARK PEM\n' +
  '      (without --chain the chain is fetched from AMD KDS). The ARK must be one of AMD\'s pinned roots unless trusted explicitly.';

/** Turn whatever --certs holds into a chain; `chainText` completes a lone VCEK. */
export async function chainFromFiles(
  certs: Buffer,
  chainText: string | undefined,
  product: Product,
  kdsBase: string,
): Promise<AmdCertChain> {
  const text = certs.toString('utf8').trim();
  if (text.startsWith('{')) return thimToChain(parseThimCertificates(text), 'file');
  if (!looksLikePem(certs) && /^[A-Za-z0-9+/=\s]+$/.test(text)) {
    // host-amd-cert-base64 from a security context.
    return thimToChain(decodeHostAmdCert(text), 'file');
  }
  const pems = looksLikePem(certs) ? splitPem(text, '--certs') : [derToPem(certs)];
  if (pems.length === 3) {
    return { vcekPem: pems[0], chainPem: pems[1] + pems[2], tcbm: readVcekExtensions(pems[0]).tcbRaw, source: 'file' };
  }
  if (pems.length !== 1) throw new CliError(`--certs holds ${pems.length} certificates: expected 1 (VCEK) or 3 (VCEK, ASK, ARK)`);
  let chainPem = chainText;
  if (chainPem === undefined) {
    const url = `${kdsBase.replace(/\/+$/, '')}/vcek/v1/${product}/cert_chain`;
    process.stderr.write(`skr: no --chain given, fetching ${url}\n`);
    chainPem = (await getOk(url, 'amd-kds', {})).body.toString('utf8');
  }
  const chain = splitPem(chainPem, '--chain');
  if (chain.length !== 2) throw new CliError(`--chain holds ${chain.length} certificates: expected ASK then ARK`);
  return { vcekPem: pems[0], chainPem: chain.join(''), tcbm: readVcekExtensions(pems[0]).tcbRaw, source: 'file' };
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
    },
  });
  if (positionals.length !== 1 || !values.certs) throw new CliError(`usage: ${usage}`);
  const reportBytes = reportBytesFromFile(await readInput(positionals[0], 'report'));
  const report = parseReport(reportBytes);
  const product = values.product ? parseProduct(values.product) : reportProduct(report);
  const chainText = values.chain ? (await readInput(values.chain, 'chain')).toString('utf8') : undefined;
  const chain = await chainFromFiles(await readInput(values.certs, 'certs'), chainText, product, values.kds ?? AMD_KDS_BASE);

  const extraRootsPem: string[] = [];
  for (const f of values['trust-root'] ?? []) extraRootsPem.push(await readFile(f, 'utf8'));
  if (values['trust-simulator']) for (const r of Object.values(TEST_ONLY_ROOTS)) extraRootsPem.push(r.arkPem);
  const trust = new TrustStore({ extraRootsPem });
  try {
    const v = verifyReport(reportBytes, chain, trust);
    io.out(
      `OK: report signed by VCEK of chip ${report.chipId.toString('hex').slice(0, 16)}… at TCB ${tcbToHex(v.vcekTcb)}, ` +
        `chained to ${v.chain.arkLabel} (${v.product})`,
    );
    return 0;
  } catch (e) {
    if (e instanceof VerificationError) {
      io.err(`FAILED at ${e.message}`);
      return 1;
    }
    throw e;
  }
}
