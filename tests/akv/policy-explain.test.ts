import { parseReleasePolicy, type ReleasePolicy } from '../../src/akv/policy';
import { explainPolicy, explainVerdict, verdictSummary } from '../../src/akv/policy-explain';
import { containerClaims, cvmClaims, HOSTDATA, SHARED_MAA } from '../helpers/maa-claims';

const MAA = SHARED_MAA;
const OLD_HOSTDATA = '11'.repeat(32);

function policy(conditions: unknown[], authority = MAA): ReleasePolicy {
  return parseReleasePolicy({ version: '1.0.0', anyOf: [{ authority, allOf: conditions }] });
}

const containerPolicy = policy([
  { claim: 'x-ms-sevsnpvm-hostdata', equals: HOSTDATA },
  { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' },
  { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' },
  { claim: 'x-ms-sevsnpvm-vmpl', equals: '0' },
]);

describe('explainPolicy', () => {
  it('prints a PASS line per condition with the token value and no hints when granted', () => {
    const ex = explainPolicy(containerPolicy, containerClaims());
    expect(ex.granted).toBe(true);
    expect(ex.hints).toEqual([]);
    expect(ex.lines[0]).toBe(`token issuer: ${MAA}`);
    expect(ex.lines).toContain(`authority anyOf[0] ${MAA}: issuer matches, conditions PASS => GRANTED`);
    expect(ex.lines).toContain('  PASS  anyOf[0].allOf[2]  x-ms-sevsnpvm-is-debuggable equals "false"  (token: false)');
    expect(ex.lines).toContain('  PASS  anyOf[0].allOf[3]  x-ms-sevsnpvm-vmpl equals "0"  (token: 0)');
    expect(ex.lines[ex.lines.length - 1]).toBe('result: GRANTED by anyOf[0]');
  });

  it('shows failures with the actual value, missing claims and nested groups', () => {
    const p = policy([
      { claim: 'x-ms-sevsnpvm-vmpl', equals: '0' },
      { anyOf: [{ claim: 'nope', exists: true }, { claim: 'x-ms-sevsnpvm-is-debuggable', equals: true }] },
    ]);
    const ex = explainPolicy(p, containerClaims());
    expect(ex.granted).toBe(false);
    expect(ex.lines).toEqual([
      `token issuer: ${MAA}`,
      `authority anyOf[0] ${MAA}: issuer matches, conditions FAIL => not granted`,
      '  PASS  anyOf[0].allOf[0]  x-ms-sevsnpvm-vmpl equals "0"  (token: 0)',
      '  FAIL  anyOf[0].allOf[1]  anyOf of 2',
      '    FAIL  anyOf[0].allOf[1].anyOf[0]  nope exists true  (token: <missing>)',
      '    FAIL  anyOf[0].allOf[1].anyOf[1]  x-ms-sevsnpvm-is-debuggable equals true  (token: false)',
      'result: DENIED',
    ]);
  });

  it('hints at the x-ms-isolation-tee prefix when a CVM-style policy meets a container token', () => {
    const p = policy([
      { claim: 'x-ms-isolation-tee.x-ms-attestation-type', equals: 'sevsnpvm' },
      { claim: 'x-ms-isolation-tee.x-ms-compliance-status', equals: 'azure-compliant-cvm' },
    ]);
    const ex = explainPolicy(p, containerClaims());
    expect(ex.granted).toBe(false);
    expect(ex.hints).toHaveLength(2);
    expect(ex.hints[0]).toMatch(/"x-ms-isolation-tee\.x-ms-attestation-type" is absent but "x-ms-attestation-type" is at the top level/);
    expect(ex.hints[0]).toMatch(/drop the "x-ms-isolation-tee\." prefix/);
    expect(ex.hints[1]).toMatch(/x-ms-compliance-status/);
  });

  it('hints at the nested form when a container-style policy meets a confidential-VM token', () => {
    const p = policy([{ claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' }]);
    const ex = explainPolicy(p, cvmClaims());
    expect(ex.granted).toBe(false);
    expect(ex.hints).toEqual([expect.stringMatching(/use "x-ms-isolation-tee\.x-ms-sevsnpvm-is-debuggable"/)]);
  });

  it('explains cvm vs uvm compliance status values', () => {
    const ex = explainPolicy(policy([{ claim: 'x-ms-compliance-status', equals: 'azure-compliant-cvm' }]), containerClaims());
    expect(ex.hints).toEqual([expect.stringMatching(/container groups attest as "azure-compliant-uvm"/)]);
  });

  it('hints that an outdated hostdata needs `skr policy digest` on the deployed ccePolicy', () => {
    const p = policy([{ claim: 'x-ms-sevsnpvm-hostdata', equals: OLD_HOSTDATA }, { claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }]);
    const ex = explainPolicy(p, containerClaims());
    expect(ex.granted).toBe(false);
    expect(ex.hints).toHaveLength(1);
    expect(ex.hints[0]).toContain('hostdata mismatch');
    expect(ex.hints[0]).toContain(HOSTDATA);
    expect(ex.hints[0]).toContain(OLD_HOSTDATA);
    expect(ex.hints[0]).toContain('skr policy digest');
  });

  it('says when the issuer differs only in host/region', () => {
    const ex = explainPolicy(policy([{ claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }], 'https://shareduks.uks.attest.azure.net/'),
      containerClaims());
    expect(ex.granted).toBe(false);
    expect(ex.lines[1]).toMatch(/issuer differs, conditions PASS => not granted/);
    expect(ex.hints).toEqual([expect.stringMatching(
      /issued by sharedeus2\.eus2\.attest\.azure\.net but the policy trusts shareduks\.uks\.attest\.azure\.net: the issuer differs only in host\/region/)]);
  });

  it('a trailing slash on the authority is not a mismatch; port, path and unrelated issuers are named', () => {
    expect(explainPolicy(policy([{ claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }], `${MAA}/`), containerClaims()).granted).toBe(true);
    const port = explainPolicy(policy([{ claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }], `${MAA}:8443`), containerClaims());
    expect(port.hints).toEqual([expect.stringMatching(/only in the port/)]);
    const path = explainPolicy(policy([{ claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }], `${MAA}/tenant`), containerClaims());
    expect(path.hints).toEqual([expect.stringMatching(/only in the path/)]);
    const other = explainPolicy(policy([{ claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }], 'https://maa.example.org'), containerClaims());
    expect(other.hints).toEqual([`the token issuer "${MAA}" is not the policy authority "https://maa.example.org"`]);
    const http = explainPolicy(policy([{ claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }]), containerClaims({ iss: 'http://sharedeus2.eus2.attest.azure.net' }));
    expect(http.hints).toEqual([expect.stringMatching(/uses https: but the token issuer .* uses http:/)]);
  });

  it('says when the token has no iss', () => {
    const claims = containerClaims();
    delete claims.iss;
    const ex = explainPolicy(containerPolicy, claims);
    expect(ex.lines[0]).toBe('token issuer: <missing iss claim>');
    expect(ex.hints[0]).toMatch(/no "iss" claim/);
  });

  it('points out case-only differences in values and claim names', () => {
    const ex = explainPolicy(policy([
      { claim: 'x-ms-attestation-type', equals: 'SEVSNPVM' },
      { claim: 'X-MS-SEVSNPVM-VMPL', equals: '0' },
      { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'False' },
    ]), containerClaims());
    expect(ex.hints).toEqual([
      expect.stringMatching(/differ only in letter case/),
      expect.stringMatching(/claim names are case-sensitive and the token has "x-ms-sevsnpvm-vmpl"/),
      expect.stringMatching(/booleans compare as "true"\/"false" in lower case; write "false"/),
    ]);
  });

  it('gives no hints for failed leaves that a passing anyOf makes irrelevant, and only for the issuer\'s authority', () => {
    const p = parseReleasePolicy({
      version: '1.0.0',
      anyOf: [
        { authority: 'https://other.attest.azure.net', allOf: [{ claim: 'x-ms-sevsnpvm-hostdata', equals: OLD_HOSTDATA }] },
        { authority: MAA, allOf: [
          { anyOf: [{ claim: 'x-ms-sevsnpvm-hostdata', equals: OLD_HOSTDATA }, { claim: 'x-ms-sevsnpvm-vmpl', equals: 0 }] },
          { claim: 'x-ms-sevsnpvm-vmpl', less: 0 },
        ] },
      ],
    });
    const ex = explainPolicy(p, containerClaims());
    expect(ex.granted).toBe(false);
    expect(ex.hints).toEqual([]);
    expect(ex.lines).toContain('  FAIL  anyOf[1].allOf[1]  x-ms-sevsnpvm-vmpl less 0  (token: 0)');
  });

  it('flags ordering operators applied to non-numeric claims', () => {
    const ex = explainPolicy(policy([{ claim: 'x-ms-attestation-type', greater: 1 }]), containerClaims());
    expect(ex.hints).toEqual([expect.stringMatching(/greater compares numbers, but the token holds "sevsnpvm"/)]);
  });
});

describe('explainPolicy on an Azure confidential VM token (x-ms-attestation-type azurevm)', () => {
  // The claim set of CVM-PROTOCOL §6: VM claims at the top level, SEV-SNP claims under x-ms-isolation-tee.
  const cvm = cvmClaims();
  const containerAdvice = /drop the "x-ms-isolation-tee\." prefix|container \(ACI\)/;

  it('grants the documented CVM policy with no hints', () => {
    const ex = explainPolicy(policy([
      { claim: 'x-ms-isolation-tee.x-ms-attestation-type', equals: 'sevsnpvm' },
      { claim: 'x-ms-isolation-tee.x-ms-compliance-status', equals: 'azure-compliant-cvm' },
    ]), cvm);
    expect(ex.granted).toBe(true);
    expect(ex.hints).toEqual([]);
  });

  it('suggests the nested claim for top-level names the token has only nested, or with the VM\'s value at the top', () => {
    const ex = explainPolicy(policy([
      { claim: 'x-ms-attestation-type', equals: 'sevsnpvm' },
      { claim: 'x-ms-compliance-status', equals: 'azure-compliant-cvm' },
    ]), cvm);
    expect(ex.granted).toBe(false);
    expect(ex.hints).toEqual([
      expect.stringMatching(/top-level "x-ms-attestation-type" is "azurevm" \(the VM\); the SEV-SNP claim is "x-ms-isolation-tee\.x-ms-attestation-type" \("sevsnpvm"\): use "x-ms-isolation-tee\.x-ms-attestation-type"$/),
      expect.stringMatching(/use "x-ms-isolation-tee\.x-ms-compliance-status"$/),
    ]);
  });

  it('suggests the top-level claim for nested names the token has only at the top, never as "drop the prefix"', () => {
    const ex = explainPolicy(policy([
      { claim: 'x-ms-isolation-tee.secureboot', equals: 'true' },
      { claim: 'x-ms-isolation-tee.x-ms-runtime.client-payload.nonce', equals: 'MTIzNA==' },
    ]), cvm);
    expect(ex.granted).toBe(false);
    expect(ex.hints).toEqual([
      expect.stringMatching(/"x-ms-isolation-tee\.secureboot" is absent from this Azure confidential VM token's x-ms-isolation-tee; "secureboot" is one of the VM's top-level claims \(true\): use "secureboot"$/),
      expect.stringMatching(/use "x-ms-runtime\.client-payload\.nonce"$/),
    ]);
    for (const h of ex.hints) expect(h).not.toMatch(containerAdvice);
  });

  it('suggests neither name when both would fail', () => {
    const ex = explainPolicy(policy([
      { claim: 'x-ms-isolation-tee.x-ms-ver', equals: '2.0' },
      { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'true' },
      { claim: 'x-ms-attestation-type', equals: 'sgx' },
    ]), cvm);
    expect(ex.granted).toBe(false);
    expect(ex.hints).toEqual([
      'claim "x-ms-isolation-tee.x-ms-ver" is absent; the token has "x-ms-ver" ("1.0"), but that would not satisfy equals "2.0" either',
      'claim "x-ms-sevsnpvm-is-debuggable" is absent; the token has "x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable" (false), ' +
        'but that would not satisfy equals "true" either',
    ]);
    for (const h of ex.hints) expect(h).not.toMatch(/use "|drop/);
  });

  it('still tells a container token to drop the prefix (its SEV-SNP claims are top-level)', () => {
    const ex = explainPolicy(policy([{ claim: 'x-ms-isolation-tee.x-ms-sevsnpvm-vmpl', equals: '0' }]), containerClaims());
    expect(ex.hints).toEqual([expect.stringMatching(/container \(ACI\) tokens carry the SEV-SNP claims at the top level; drop the "x-ms-isolation-tee\." prefix/)]);
  });
});

describe('explainVerdict (the 403 explanation)', () => {
  it('a container token against nested names: the failing claims absent, the hint to drop the prefix', () => {
    const p = policy([
      { claim: 'x-ms-isolation-tee.x-ms-sevsnpvm-hostdata', equals: HOSTDATA },
      { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' },
    ]);
    const v = explainVerdict(p, containerClaims());
    expect(v.granted).toBe(false);
    expect(v.closestBranch).toEqual({
      index: 0, authority: MAA, issuerMatches: true, omitted: 0,
      failing: [{ path: 'anyOf[0].allOf[0]', claim: 'x-ms-isolation-tee.x-ms-sevsnpvm-hostdata', operator: 'equals', wants: HOSTDATA, present: false }],
    });
    expect(v.hints).toEqual([expect.stringContaining('drop the "x-ms-isolation-tee." prefix')]);
    expect(verdictSummary(v)).toBe(`release policy conditions not met (anyOf[0]): x-ms-isolation-tee.x-ms-sevsnpvm-hostdata equals "${HOSTDATA}" (token has no such claim)`);
  });

  it('no authority is the issuer: the branch with the fewest failures, the authority hint, and the summary says so', () => {
    const p = parseReleasePolicy({
      version: '1.0.0',
      anyOf: [
        { authority: 'https://other.eus.attest.azure.net', allOf: [{ claim: 'x-ms-sevsnpvm-hostdata', equals: OLD_HOSTDATA }, { claim: 'x-ms-sevsnpvm-vmpl', equals: '1' }] },
        { authority: 'https://sharedweu.weu.attest.azure.net', allOf: [{ claim: 'x-ms-sevsnpvm-hostdata', equals: HOSTDATA }] },
      ],
    });
    const v = explainVerdict(p, containerClaims());
    expect(v.closestBranch).toMatchObject({ index: 1, issuerMatches: false, failing: [] });
    expect(v.hints.some((h) => h.includes('differs only in host/region'))).toBe(true);
    expect(verdictSummary(v)).toBe(`no authority in the release policy matches the token issuer ${MAA}`);
  });

  it('token values: objects and arrays only by kind, long strings clipped; at most 10 failing claims', () => {
    const many = Array.from({ length: 12 }, (_, i) => ({ claim: `x-ms-custom-${i}`, equals: 'x' }));
    const claims = { ...containerClaims(), 'x-ms-custom-0': { keys: [{ n: 'secret-looking' }] }, 'x-ms-custom-1': ['a'], 'x-ms-custom-2': 'y'.repeat(5000) };
    const v = explainVerdict(policy(many), claims);
    const failing = v.closestBranch?.failing ?? [];
    expect(failing).toHaveLength(10);
    expect(v.closestBranch?.omitted).toBe(2);
    expect(failing[0].has).toBe('<object>');
    expect(failing[1].has).toBe('<array>');
    expect(String(failing[2].has).length).toBeLessThanOrEqual(200);
    expect(JSON.stringify(v)).not.toContain('secret-looking');
  });

  it('granted: the granting branch, nothing failing, no hints', () => {
    const v = explainVerdict(containerPolicy, containerClaims());
    expect(v).toEqual({ granted: true, tokenIssuer: MAA, closestBranch: { index: 0, authority: MAA, issuerMatches: true, failing: [], omitted: 0 }, hints: [] });
  });
});
