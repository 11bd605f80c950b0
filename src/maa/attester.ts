/**
 * The attestation part of a key release: fresh evidence binding the caller's runtime data,
 * exchanged at an MAA endpoint for a token. One implementation per platform; the SEV-SNP one
 * (container groups on ACI/AKS) is below; the Azure confidential VM's, whose evidence comes from its
 * vTPM, is src/cvm/guest-attester.ts (see docs/architecture.md).
 */
import type { AmdCertChain } from '../certs/types';
import type { Endpoint } from '../common/endpoint';
import type { Evidence, ReportRequest } from '../snp/evidence';
import { reportDataFor } from '../snp/report';
import type { MaaClient } from './client';

export interface Attester {
  /**
   * An MAA token from `endpoint` for fresh evidence binding `runtimeData` (the key-encryption key's
   * public JWKS): the token's `x-ms-runtime` is that JSON.
   */
  attest(endpoint: Endpoint, runtimeData: Buffer, signal?: AbortSignal): Promise<string>;
}

/** Evidence with the collateral that endorses it (CollateralProvider is the SNP one). */
export interface EvidenceCollateralSource {
  getEvidenceWithChain(req: ReportRequest, signal?: AbortSignal): Promise<{ evidence: Evidence; chain: AmdCertChain }>;
}

export interface SevSnpAttesterOptions {
  collateral: EvidenceCollateralSource;
  maa: MaaClient;
  /** reference-info-base64 from the security context (the UVM endorsement), when there is one. */
  referenceInfoBase64?: string;
}

/** SEV-SNP: a report with REPORT_DATA = sha256(runtimeData), its VCEK chain and UVM endorsement, to /attest/SevSnpVm. */
export class SevSnpAttester implements Attester {
  constructor(private readonly opts: SevSnpAttesterOptions) {}

  async attest(endpoint: Endpoint, runtimeData: Buffer, signal?: AbortSignal): Promise<string> {
    const { evidence, chain } = await this.opts.collateral.getEvidenceWithChain({ reportData: reportDataFor(runtimeData) }, signal);
    return this.opts.maa.attest(
      endpoint,
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
}
