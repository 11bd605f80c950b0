/** The simulated SEV-SNP platform: TEST ONLY (its AMD chain is rooted in committed, public keys). */
export {
  SimulatedPlatform,
  SimulatedEvidenceSource,
  SIMULATED_DESCRIPTION,
  CERT_TABLE_GUID,
  type SimulatedPlatformOptions,
  type IssuedVcek,
  type VcekIssueOptions,
} from './platform';
export {
  PRODUCT_INFO,
  VCEK_OID,
  type ProductInfo,
  type HwidForm,
  defaultChipId,
  defaultTcb,
  deriveVcekKey,
  mintAmdRoots,
  mintVcek,
  simulatedName,
  vcekExtensions,
} from './amd-chain';
export { DEFAULT_SECURITY_POLICY_BASE64, DEFAULT_SECURITY_POLICY_REGO } from './default-policy';
export { TEST_ONLY_ROOTS, type CommittedRoots } from './test-only-roots';
export { simulatedUvmEndorsementBase64, TEST_ONLY_UVM_ROOT_SHA256 } from './uvm';
export { TEST_ONLY_UVM_ROOT_PEM } from './test-only-uvm-signer';
