/**
 * `skr policy explain` on Azure TDX CVM tokens: TDX claims (tdx_mrtd, …) nest under x-ms-isolation-tee as
 * the SEV-SNP ones do; a policy for the other CPU vendor is named as such.
 */
import { explainPolicy } from '../../src/akv/policy-explain';
import { buildReleasePolicy, parseReleasePolicy } from '../../src/akv/policy';
import { POLICY_TEMPLATES } from '../../src/akv/policy-templates';
import { cvmClaims, SHARED_MAA, tdxCvmClaims } from '../helpers/maa-claims';

const policy = (groups: { claim: string; equals: string }[][]) => buildReleasePolicy({ authority: SHARED_MAA, anyOfGroups: groups });

describe('policy explain on TDX CVM tokens', () => {
  it('the CVM template grants a TDX token through its tdxvm group', () => {
    const ex = explainPolicy(policy(POLICY_TEMPLATES['azure-cvm'].map((g) => [...g])), tdxCvmClaims());
    expect(ex.granted).toBe(true);
    expect(ex.lines).toContain('result: GRANTED by anyOf[1]');
  });

  it('an SEV-SNP-only policy is named as the other vendor\'s', () => {
    const ex = explainPolicy(policy([[...POLICY_TEMPLATES['azure-cvm'][0]]]), tdxCvmClaims());
    expect(ex.granted).toBe(false);
    expect(ex.hints).toEqual([expect.stringMatching(/^this token is from a TDX confidential VM \("tdxvm"\) and this condition admits only "sevsnpvm" \(SEV-SNP\): add a group for "tdxvm"/)]);
  });

  it('TDX claims nest under x-ms-isolation-tee: tdx_mrtd at the top level gets the prefix hint', () => {
    const mrtd = '024a32b0'.padEnd(96, '0');
    const ex = explainPolicy(parseReleasePolicy({ version: '1.0.0', anyOf: [{ authority: SHARED_MAA, allOf: [{ claim: 'tdx_mrtd', equals: mrtd }] }] }), tdxCvmClaims());
    expect(ex.hints).toEqual([expect.stringMatching(/"tdx_mrtd" is absent but "x-ms-isolation-tee.tdx_mrtd" exists .*nest the TEE's claims \(SEV-SNP or TDX\) under x-ms-isolation-tee/)]);
    const nested = explainPolicy(parseReleasePolicy({ version: '1.0.0', anyOf: [{ authority: SHARED_MAA, allOf: [{ claim: 'x-ms-isolation-tee.tdx_mrtd', equals: mrtd }, { claim: 'x-ms-isolation-tee.tdx_td_attributes_debug', equals: 'false' }] }] }), tdxCvmClaims());
    expect(nested.granted).toBe(true);
  });

  it('a claim only the other vendor has is named: SEV-SNP claims on a TDX token, TDX claims on an SEV-SNP token', () => {
    const snpClaim = explainPolicy(parseReleasePolicy({ version: '1.0.0', anyOf: [{ authority: SHARED_MAA, allOf: [{ claim: 'x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable', equals: 'false' }] }] }), tdxCvmClaims());
    expect(snpClaim.hints).toEqual([expect.stringMatching(/is a SEV-SNP claim, but this token is from a TDX confidential VM \("tdxvm"\), whose TEE claims are tdx_\*/)]);
    const tdxClaim = explainPolicy(parseReleasePolicy({ version: '1.0.0', anyOf: [{ authority: SHARED_MAA, allOf: [{ claim: 'x-ms-isolation-tee.tdx_mrtd', exists: true }] }] }), cvmClaims());
    expect(tdxClaim.hints).toEqual([expect.stringMatching(/"x-ms-isolation-tee.tdx_mrtd" is a TDX claim, but this token is from a SEV-SNP confidential VM/)]);
  });
});
