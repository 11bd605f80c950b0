/**
 * `/attest/maa` through MAA's TDX platform endpoint (`/attest/TdxVm`) on an Azure TDX CVM, for callers who ask
 * for it (`"maa_api": "TdxVm"`), as `/attest/SevSnpVm` is used on ACI. No vTPM key and no envelope: the HCL
 * report is refreshed with sha256(runtime data) as user data (the evidence source), its TD quote and its
 * runtime claims go to MAA, which checks REPORTDATA[0:32] = sha256(claims). The token is verified (signature,
 * issuer) and its `x-ms-runtime.user-data` must be the user data we wrote: the caller's runtime data.
 */
import { VerificationError } from '../common/errors';
import type { Endpoint } from '../common/endpoint';
import type { FetchLike } from '../common/http';
import type { Attester } from '../maa/attester';
import type { MaaClient } from '../maa/client';
import { verifyMaaToken, type JwksCache } from '../maa/verify-token';
import type { EvidenceSource } from '../snp/evidence';
import { reportDataFor } from '../snp/report';
import { claimsUserData, parseTdxHclReport } from './hcl';

export interface TdxVmAttesterOptions {
  /** The CVM's evidence source (its TDX evidence carries the TD quote). */
  evidence: EvidenceSource;
  maa: MaaClient;
  fetch: FetchLike;
  jwksCache?: JwksCache;
}

export class TdxVmAttester implements Attester {
  constructor(private readonly opts: TdxVmAttesterOptions) {}

  async attest(endpoint: Endpoint, runtimeData: Buffer, signal?: AbortSignal): Promise<string> {
    const userData = reportDataFor(runtimeData);
    const e = await this.opts.evidence.getReport({ reportData: userData });
    if (!e.tdQuote || !e.hclReport) throw new VerificationError('tdx-quote-source', 'tdx-quote-source: this CVM\'s evidence has no TD quote (not a TDX CVM)');
    const hcl = parseTdxHclReport(e.hclReport);
    const token = await this.opts.maa.attestTdxVm(endpoint, { quote: e.tdQuote, runtimeData: hcl.claimsBytes, dataType: 'JSON' }, signal);
    const claims = await verifyMaaToken(token, { authority: endpoint.origin, fetch: this.opts.fetch, ...(this.opts.jwksCache ? { jwksCache: this.opts.jwksCache } : {}) });
    const rt = claims['x-ms-runtime'];
    const got = typeof rt === 'object' && rt !== null ? claimsUserData(rt as Record<string, unknown>) : undefined;
    if (got?.toUpperCase() !== userData.toString('hex').toUpperCase()) {
      throw new VerificationError('maa-token-runtime-data', 'maa-token-runtime-data: the token\'s x-ms-runtime.user-data is not sha256 of this request\'s runtime data');
    }
    return token;
  }
}
