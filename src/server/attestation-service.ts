/** The AttestationService the sidecar runs: an EvidenceSource, the collateral provider and the Attester. */
import type { CollateralProvider } from '../certs/provider';
import type { Endpoint } from '../common/endpoint';
import type { Attester } from '../maa/attester';
import type { EvidenceSource } from '../snp/evidence';
import type { AttestationService, CombinedAttestation, MaaApi, RawAttestation } from './attestation';
import { badRequest } from './http-errors';

export interface SidecarAttestationOptions {
  evidence: EvidenceSource;
  collateral: CollateralProvider;
  attester: Attester;
  /** reference-info-base64 from the security context ('' when the platform provides none). */
  referenceInfoBase64?: string;
  /** `aci` or `azure-cvm`. */
  platform?: string;
  /** On a CVM: `sevsnp` or `tdx`. */
  tee?: 'sevsnp' | 'tdx';
  /** TDX CVMs: `/attest/maa` through MAA's `/attest/TdxVm` when the caller asks for it. */
  tdxVm?: Attester;
}

export class SidecarAttestation implements AttestationService {
  readonly platform?: string;
  readonly tee?: 'sevsnp' | 'tdx';
  constructor(private readonly opts: SidecarAttestationOptions) {
    if (opts.platform) this.platform = opts.platform;
    if (opts.tee) this.tee = opts.tee;
  }

  async rawReport(reportData: Buffer): Promise<RawAttestation> {
    const e = await this.opts.evidence.getReport({ reportData });
    return { report: e.report, ...(e.hclReport ? { hclReport: e.hclReport } : {}), ...(e.tdQuote ? { tdQuote: e.tdQuote } : {}) };
  }

  async combined(reportData: Buffer): Promise<CombinedAttestation> {
    if (this.tee === 'tdx') {
      // No AMD chain on TDX: the quote carries its PCK chain (certification data type 5).
      const e = await this.opts.evidence.getReport({ reportData });
      return { report: e.report, ...(e.hclReport ? { hclReport: e.hclReport } : {}), ...(e.tdQuote ? { tdQuote: e.tdQuote } : {}), uvmEndorsementsBase64: '' };
    }
    const { evidence, chain } = await this.opts.collateral.getEvidenceWithChain({ reportData });
    return { report: evidence.report, ...(evidence.hclReport ? { hclReport: evidence.hclReport } : {}), chain, uvmEndorsementsBase64: this.opts.referenceInfoBase64 ?? '' };
  }

  maaToken(maaEndpoint: Endpoint, runtimeData: Buffer, signal?: AbortSignal, opts?: { api?: MaaApi }): Promise<string> {
    if (opts?.api === 'TdxVm') {
      if (!this.opts.tdxVm) throw badRequest(`maa_api "TdxVm" is MAA's endpoint for Intel TDX VMs; this sidecar runs on ${this.platform ?? 'aci'}${this.tee ? ` (${this.tee})` : ''}`);
      return this.opts.tdxVm.attest(maaEndpoint, runtimeData, signal);
    }
    return this.opts.attester.attest(maaEndpoint, runtimeData, signal);
  }

  describe(): string {
    return this.opts.evidence.description;
  }
}
