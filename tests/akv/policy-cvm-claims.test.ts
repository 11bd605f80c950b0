/**
 * Release policies on an Azure confidential-VM (AzureGuest) token, as Key Vault evaluates them: dotted
 * claim names descend into `x-ms-isolation-tee`; the top-level names of a container token do not match.
 */
import { buildReleasePolicy, evaluateReleasePolicy, failedConditions, lookupClaim, parseReleasePolicy } from '../../src/akv/policy';
import { applyPolicyTemplate, POLICY_TEMPLATES } from '../../src/akv/policy-templates';
import { parseImportKeyConfig, policyFromConfig } from '../../src/akv/import-key';
import { cvmClaims } from '../helpers/maa-claims';

const MAA = 'https://sharedweu.weu.attest.azure.net';
const cvmToken = (tee: Record<string, unknown> = {}) => cvmClaims(tee, MAA);
const policyOf = (claims: { claim: string; equals: string }[]) => buildReleasePolicy({ authority: MAA, anyOfGroups: [claims] });

describe('nested x-ms-isolation-tee claims', () => {
  it('the CVM template policy grants a compliant CVM token', () => {
    const ev = evaluateReleasePolicy(policyOf([...POLICY_TEMPLATES['azure-cvm'][0]]), cvmToken());
    expect(ev.granted).toBe(true);
    expect(ev.authorities[0].conditions.map((c) => c.actual)).toEqual(['sevsnpvm', 'azure-compliant-cvm']);
  });

  it('the top-level names see the VM-level claim (azurevm) or nothing, and fail', () => {
    const ev = evaluateReleasePolicy(policyOf([
      { claim: 'x-ms-attestation-type', equals: 'sevsnpvm' },
      { claim: 'x-ms-compliance-status', equals: 'azure-compliant-cvm' },
    ]), cvmToken());
    expect(ev.granted).toBe(false);
    expect(failedConditions(ev).map((c) => [c.claim, c.present, c.actual])).toEqual([
      ['x-ms-attestation-type', true, 'azurevm'],
      ['x-ms-compliance-status', false, undefined],
    ]);
  });

  it('a debuggable VM fails on the nested compliance status; booleans and numbers compare nested too', () => {
    const token = cvmToken({ 'x-ms-compliance-status': 'azure-noncompliant-cvm', 'x-ms-sevsnpvm-is-debuggable': true });
    const ev = evaluateReleasePolicy(policyOf([...POLICY_TEMPLATES['azure-cvm'][0]]), token);
    expect(failedConditions(ev).map((c) => c.claim)).toEqual(['x-ms-isolation-tee.x-ms-compliance-status']);
    const p = parseReleasePolicy({ version: '1.0.0', anyOf: [{ authority: MAA, allOf: [
      { claim: 'x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable', equals: 'false' },
      { claim: 'x-ms-isolation-tee.x-ms-sevsnpvm-vmpl', lessOrEquals: 0 },
    ] }] });
    expect(evaluateReleasePolicy(p, cvmToken()).granted).toBe(true);
    expect(evaluateReleasePolicy(p, token).granted).toBe(false);
  });

  it('lookups: nested objects only (no array indexing), a literal dotted key wins, a missing level is absent', () => {
    expect(lookupClaim(cvmToken(), 'x-ms-isolation-tee.x-ms-runtime.keys.0.kid')).toEqual({ present: false });
    expect(lookupClaim({ 'a.b': 1, a: { b: 2 } }, 'a.b')).toEqual({ present: true, value: 1 });
    expect(lookupClaim({ a: { 'b.c': 3 } }, 'a.b.c')).toEqual({ present: true, value: 3 });
    expect(lookupClaim({ iss: MAA }, 'x-ms-isolation-tee.x-ms-compliance-status')).toEqual({ present: false });
    expect(lookupClaim({ 'x-ms-isolation-tee': 'flat' }, 'x-ms-isolation-tee.x-ms-compliance-status')).toEqual({ present: false });
  });

  it('the import template builds the nested policy under the config authority', () => {
    const cfg = parseImportKeyConfig(applyPolicyTemplate({ key: { kid: 'k', kty: 'RSA-HSM', authority: { endpoint: 'sharedweu.weu.attest.azure.net' }, akv: { endpoint: 'v.vault.azure.net' } } }, 'azure-cvm'));
    expect(policyFromConfig(cfg)).toEqual({ version: '1.0.0', anyOf: POLICY_TEMPLATES['azure-cvm'].map((g) => ({ authority: MAA, allOf: [...g] })) });
    expect(evaluateReleasePolicy(policyFromConfig(cfg), cvmToken()).granted).toBe(true);
  });

  it('the template admits TDX CVMs too (x-ms-attestation-type tdxvm), as Azure\'s default CVM policy does, and nothing else', () => {
    const cfg = parseImportKeyConfig(applyPolicyTemplate({ key: { kid: 'k', kty: 'RSA-HSM', authority: { endpoint: 'sharedweu.weu.attest.azure.net' }, akv: { endpoint: 'v.vault.azure.net' } } }, 'azure-cvm'));
    const policy = policyFromConfig(cfg);
    expect(evaluateReleasePolicy(policy, cvmToken({ 'x-ms-attestation-type': 'tdxvm' })).granted).toBe(true);
    expect(evaluateReleasePolicy(policy, cvmToken({ 'x-ms-attestation-type': 'sgx' })).granted).toBe(false);
    expect(evaluateReleasePolicy(policy, cvmToken({ 'x-ms-attestation-type': 'tdxvm', 'x-ms-compliance-status': 'azure-noncompliant-cvm' })).granted).toBe(false);
  });
});
