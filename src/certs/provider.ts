/**
 * Report + matching chain, with the reference sidecar's TCB reconciliation (pkg/attest/attest.go):
 * if REPORTED_TCB ≠ the chain's TCB, refresh the chain; if still different, take a fresh report
 * once (the firmware may have been updated under us) and fetch its chain; if still different, fail
 * naming both values.
 */
import { tcbToHex, Product } from '../snp/tcb';
import { parseReport, reportProduct, AttestationReport } from '../snp/report';
import type { Evidence, EvidenceSource, ReportRequest } from '../snp/evidence';
import { CollateralCache, CollateralCacheOptions, CacheStats } from './cache';
import { TcbMismatchError } from './errors';
import type { AmdCertChain, CollateralKey, CollateralSource } from './types';
import { NO_TELEMETRY, type Telemetry } from '../common/telemetry';

export interface CollateralProviderOptions {
  evidence: EvidenceSource;
  /** Where the chain normally comes from (security context, local THIM). */
  primary: CollateralSource;
  /** Where a fresher chain comes from when TCBs differ (the configured certcache). Defaults to re-fetching primary. */
  refresh?: CollateralSource;
  /** Options for the caches wrapped around both sources. */
  cache?: CollateralCacheOptions;
  /** Product for v2 reports, which carry no CPUID. Default Milan. */
  fallbackProduct?: Product;
  /** Times each getEvidenceWithChain as the `collateral` stage (it includes the device call). */
  telemetry?: Telemetry;
}

export interface EvidenceWithChain {
  evidence: Evidence;
  report: AttestationReport;
  chain: AmdCertChain;
}

export class CollateralProvider {
  readonly primary: CollateralCache;
  readonly refresh?: CollateralCache;

  constructor(private readonly opts: CollateralProviderOptions) {
    this.primary = opts.primary instanceof CollateralCache ? opts.primary : new CollateralCache(opts.primary, opts.cache);
    if (opts.refresh) this.refresh = opts.refresh instanceof CollateralCache ? opts.refresh : new CollateralCache(opts.refresh, opts.cache);
  }

  keyFor(report: AttestationReport): CollateralKey {
    return { product: reportProduct(report, this.opts.fallbackProduct ?? 'Milan'), chipId: report.chipId, tcb: report.reportedTcb };
  }

  stats(): { primary: CacheStats; refresh?: CacheStats } {
    return { primary: this.primary.stats(), ...(this.refresh ? { refresh: this.refresh.stats() } : {}) };
  }

  /** Primary chain; on TCB mismatch one refresh. Returns the best chain and whether it matches. */
  private async tryChain(report: AttestationReport, signal?: AbortSignal): Promise<AmdCertChain> {
    const key = this.keyFor(report);
    const first = await this.primary.get(key, { signal });
    if (first.tcbm === report.reportedTcb) return first;
    if (this.refresh) {
      const cached = await this.refresh.get(key, { signal });
      if (cached.tcbm === report.reportedTcb) return cached;
      return this.refresh.get(key, { refresh: true, signal });
    }
    return this.primary.get(key, { refresh: true, signal });
  }

  /** The chain for an already-parsed report, refreshing once on TCB mismatch; ERR_TCB_MISMATCH if it never matches. */
  async chainForReport(report: AttestationReport, signal?: AbortSignal): Promise<AmdCertChain> {
    const chain = await this.tryChain(report, signal);
    if (chain.tcbm !== report.reportedTcb) throw mismatch(report.reportedTcb, chain);
    return chain;
  }

  /** A report for `req` and the chain that endorses it. */
  getEvidenceWithChain(req: ReportRequest, signal?: AbortSignal): Promise<EvidenceWithChain> {
    return (this.opts.telemetry ?? NO_TELEMETRY).stage('collateral', () => this.evidenceWithChain(req, signal));
  }

  private async evidenceWithChain(req: ReportRequest, signal?: AbortSignal): Promise<EvidenceWithChain> {
    let evidence = await this.opts.evidence.getReport(req);
    let report = parseReport(evidence.report);
    let chain = await this.tryChain(report, signal);
    if (chain.tcbm !== report.reportedTcb) {
      evidence = await this.opts.evidence.getReport(req);
      report = parseReport(evidence.report);
      chain = await this.tryChain(report, signal);
      if (chain.tcbm !== report.reportedTcb) throw mismatch(report.reportedTcb, chain);
    }
    return { evidence, report, chain };
  }
}

function mismatch(reported: bigint, chain: AmdCertChain): TcbMismatchError {
  return new TcbMismatchError(
    reported,
    chain.tcbm,
    `SNP REPORTED_TCB ${tcbToHex(reported)} does not match the certificate TCB ${tcbToHex(chain.tcbm)} (from ${chain.source}) after refreshing the chain and the report`,
  );
}
