/**
 * MAA token claim sets shaped as the service issues them (booleans and numbers as such), for the
 * release-policy tests: one for a confidential container group, one for an Azure confidential VM.
 */

export const SHARED_MAA = 'https://sharedeus2.eus2.attest.azure.net';
/** x-ms-sevsnpvm-hostdata of the container claims: sha256 of a ccePolicy. */
export const HOSTDATA = '73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20';

/** A confidential container group's (ACI, SevSnpVm) token: the SEV-SNP claims at the top level. */
export function containerClaims(over: Record<string, unknown> = {}, iss = SHARED_MAA): Record<string, unknown> {
  return {
    iss,
    'x-ms-attestation-type': 'sevsnpvm',
    'x-ms-compliance-status': 'azure-compliant-uvm',
    'x-ms-sevsnpvm-hostdata': HOSTDATA,
    'x-ms-sevsnpvm-is-debuggable': false,
    'x-ms-sevsnpvm-vmpl': 0,
    'x-ms-sevsnpvm-guestsvn': 2,
    'x-ms-sevsnpvm-snpfw-svn': 24,
    'x-ms-sevsnpvm-uvm-endorsement': { 'x-ms-sevsnpvm-guestsvn': '101', 'x-ms-sevsnpvm-launchmeasurement': 'ab'.repeat(48) },
    ...over,
  };
}

/**
 * An Azure confidential VM's (AzureGuest) token, CVM-PROTOCOL §6: VM claims at the top level, the
 * SEV-SNP claims under x-ms-isolation-tee (`tee` overrides those), the vTPM's ephemeral key in x-ms-runtime.
 */
export function cvmClaims(tee: Record<string, unknown> = {}, iss = SHARED_MAA): Record<string, unknown> {
  return {
    iss,
    'x-ms-ver': '1.0',
    'x-ms-attestation-type': 'azurevm',
    secureboot: true,
    'x-ms-azurevm-vmid': '6506B531-1634-431E-99D2-42B7D3414AD0',
    'x-ms-isolation-tee': {
      'x-ms-attestation-type': 'sevsnpvm',
      'x-ms-compliance-status': 'azure-compliant-cvm',
      'x-ms-runtime': { keys: [{ kid: 'HCLAkPub' }], 'vm-configuration': { 'secure-boot': true } },
      'x-ms-sevsnpvm-is-debuggable': false,
      'x-ms-sevsnpvm-vmpl': 0,
      ...tee,
    },
    'x-ms-runtime': { 'client-payload': { nonce: 'MTIzNA==' }, keys: [{ kid: 'TpmEphemeralEncryptionKey', key_ops: ['encrypt'] }] },
  };
}

/** An Azure TDX confidential VM's token: as cvmClaims, with MAA's TDX claims under x-ms-isolation-tee. */
export function tdxCvmClaims(tee: Record<string, unknown> = {}, iss = SHARED_MAA): Record<string, unknown> {
  const c = cvmClaims({}, iss);
  const nested = { ...(c['x-ms-isolation-tee'] as Record<string, unknown>) };
  delete nested['x-ms-sevsnpvm-is-debuggable'];
  delete nested['x-ms-sevsnpvm-vmpl'];
  c['x-ms-isolation-tee'] = {
    ...nested,
    'x-ms-attestation-type': 'tdxvm',
    tdx_mrtd: '024a32b0'.padEnd(96, '0'),
    tdx_mrseam: 'ab'.repeat(48),
    tdx_td_attributes_debug: false,
    tdx_rtmr0: 'cd'.repeat(48),
    attester_tcb_status: 'UpToDate',
    ...tee,
  };
  return c;
}
