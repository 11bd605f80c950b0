/**
 * The claim set MAA puts in a SevSnpVm (confidential container) token, derived from a verified report.
 * Names and JSON types follow real MAA tokens: booleans for the policy flags, numbers for SVNs and VMPL,
 * lowercase hex strings for every digest and identifier. The registered claims (iss, iat, nbf, exp, jti)
 * are added by the signer, not here.
 */
import { toHex } from '../../common/bytes';
import { AttestationReport, POLICY_DEBUG_BIT, POLICY_MIGRATE_MA_BIT, POLICY_SMT_BIT, reportProduct } from '../../snp/report';
import { decodeTcb, Product } from '../../snp/tcb';
import { policyHash } from './policy';

export const ATTESTATION_TYPE = 'sevsnpvm';
export const COMPLIANT_UVM = 'azure-compliant-uvm';
export const MAA_TOKEN_VERSION = '1.0';

/** Every claim a SevSnpVm token from the emulator can carry besides the registered JWT claims. */
export const SEVSNPVM_CLAIM_NAMES: readonly string[] = [
  'nonce',
  'x-ms-attestation-type',
  'x-ms-compliance-status',
  'x-ms-policy-hash',
  'x-ms-runtime',
  'x-ms-sevsnpvm-authorkeydigest',
  'x-ms-sevsnpvm-bootloader-svn',
  'x-ms-sevsnpvm-familyId',
  'x-ms-sevsnpvm-guestsvn',
  'x-ms-sevsnpvm-hostdata',
  'x-ms-sevsnpvm-idkeydigest',
  'x-ms-sevsnpvm-imageId',
  'x-ms-sevsnpvm-is-debuggable',
  'x-ms-sevsnpvm-launchmeasurement',
  'x-ms-sevsnpvm-microcode-svn',
  'x-ms-sevsnpvm-migration-allowed',
  'x-ms-sevsnpvm-reportdata',
  'x-ms-sevsnpvm-reportid',
  'x-ms-sevsnpvm-smt-allowed',
  'x-ms-sevsnpvm-snpfw-svn',
  'x-ms-sevsnpvm-tee-svn',
  'x-ms-sevsnpvm-uvm-endorsement',
  'x-ms-sevsnpvm-vmpl',
  'x-ms-ver',
];

export interface ClaimsOptions {
  /** AMD product whose TCB layout REPORTED_TCB uses; default from the report's CPUID, else Milan. */
  product?: Product;
  /** The `x-ms-runtime` object (runtime data of type JSON, parsed); omitted when undefined. */
  runtime?: unknown;
  /**
   * A UVM endorsement that verified and whose launch measurement equals the report's MEASUREMENT.
   * Only then does the token say `x-ms-compliance-status: azure-compliant-uvm`.
   */
  uvmEndorsement?: { launchMeasurement: string; guestSvn: string };
  /** `x-ms-policy-hash`; default the hash of the emulator's default policy. */
  policyHash?: string;
  /** The request's nonce, echoed as a decimal string (u64 does not fit a JSON number). */
  nonce?: bigint;
}

/** Claims for one report, in the alphabetical order MAA serialises them. */
export function claimsFromReport(report: AttestationReport, opts: ClaimsOptions = {}): Record<string, unknown> {
  const tcb = decodeTcb(report.reportedTcb, opts.product ?? reportProduct(report));
  const c: Record<string, unknown> = {};
  if (opts.nonce !== undefined) c['nonce'] = opts.nonce.toString(10);
  c['x-ms-attestation-type'] = ATTESTATION_TYPE;
  if (opts.uvmEndorsement) c['x-ms-compliance-status'] = COMPLIANT_UVM;
  c['x-ms-policy-hash'] = opts.policyHash ?? policyHash();
  if (opts.runtime !== undefined) c['x-ms-runtime'] = opts.runtime;
  c['x-ms-sevsnpvm-authorkeydigest'] = toHex(report.authorKeyDigest);
  c['x-ms-sevsnpvm-bootloader-svn'] = tcb.bootloader;
  c['x-ms-sevsnpvm-familyId'] = toHex(report.familyId);
  c['x-ms-sevsnpvm-guestsvn'] = report.guestSvn;
  c['x-ms-sevsnpvm-hostdata'] = toHex(report.hostData);
  c['x-ms-sevsnpvm-idkeydigest'] = toHex(report.idKeyDigest);
  c['x-ms-sevsnpvm-imageId'] = toHex(report.imageId);
  c['x-ms-sevsnpvm-is-debuggable'] = (report.policy & POLICY_DEBUG_BIT) !== 0n;
  c['x-ms-sevsnpvm-launchmeasurement'] = toHex(report.measurement);
  c['x-ms-sevsnpvm-microcode-svn'] = tcb.microcode;
  c['x-ms-sevsnpvm-migration-allowed'] = (report.policy & POLICY_MIGRATE_MA_BIT) !== 0n;
  c['x-ms-sevsnpvm-reportdata'] = toHex(report.reportData);
  c['x-ms-sevsnpvm-reportid'] = toHex(report.reportId);
  c['x-ms-sevsnpvm-smt-allowed'] = (report.policy & POLICY_SMT_BIT) !== 0n;
  c['x-ms-sevsnpvm-snpfw-svn'] = tcb.snp;
  c['x-ms-sevsnpvm-tee-svn'] = tcb.tee;
  if (opts.uvmEndorsement) {
    // The endorsement's own payload values, SVN kept as the string the payload carries.
    c['x-ms-sevsnpvm-uvm-endorsement'] = {
      'x-ms-sevsnpvm-guestsvn': opts.uvmEndorsement.guestSvn,
      'x-ms-sevsnpvm-launchmeasurement': opts.uvmEndorsement.launchMeasurement.toLowerCase(),
    };
  }
  c['x-ms-sevsnpvm-vmpl'] = report.vmpl;
  c['x-ms-ver'] = MAA_TOKEN_VERSION;
  return c;
}
