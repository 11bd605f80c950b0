/** The AttestationService the sidecar runs: an EvidenceSource plus the collateral provider. */
import type { CollateralProvider } from '../certs/provider';
import type { MaaClient } from '../maa/client';
import type { EvidenceSource } from '../snp/evidence';
import { reportDataFor } from '../snp/report';
import type { AttestationService, CombinedAttestation } from './attestation';

export interface SidecarAttestationOptions {
  evidence: EvidenceSource;
  collateral: CollateralProvider;
  maa: MaaClient;
  /** reference-info-base64 from the security context ('' when the platform provides none). */
  referenceInfoBase64?: string;
}

export class SidecarAttestation implements AttestationService {
  constructor(private readonly opts: SidecarAttestationOptions) {}

  async rawReport(reportData: Buffer): Promise<Buffer> {
    return (await this.opts.evidence.getReport({ reportData })).report;
  }

  async combined(reportData: Buffer): Promise<CombinedAttestation> {
    const { evidence, chain } = await this.opts.collateral.getEvidenceWithChain({ reportData });
    return { report: evidence.report, chain, uvmEndorsementsBase64: this.opts.referenceInfoBase64 ?? '' };
  }

  async maaToken(maaEndpoint: string, runtimeData: Buffer, signal?: AbortSignal): Promise<string> {
    const { evidence, chain } = await this.opts.collateral.getEvidenceWithChain({ reportData: reportDataFor(runtimeData) }, signal);
    return this.opts.maa.attest(
      maaEndpoint,
      {
        report: evidence.report,
        vcekPem: chain.vcekPem,
        chainPem: chain.chainPem,
        uvmEndorsementBase64: this.opts.referenceInfoBase64,
        runtimeData,
      },
      signal,
    );
  }

  describe(): string {
    return this.opts.evidence.description;
  }
}
