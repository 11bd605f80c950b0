/** `skr policy explain` with an Azure confidential VM token: hints in the CVM token's terms. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli as run } from '../helpers/cli';

const b64u = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (claims: Record<string, unknown>) => `${b64u({ alg: 'RS256', typ: 'JWT' })}.${b64u(claims)}.c2ln`;
const MAA = 'https://sharedweu.weu.attest.azure.net';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-explain-cvm-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const cvmToken = jwt({
  iss: MAA,
  'x-ms-attestation-type': 'azurevm',
  secureboot: true,
  'x-ms-isolation-tee': { 'x-ms-attestation-type': 'sevsnpvm', 'x-ms-compliance-status': 'azure-compliant-cvm' },
});

function policyFile(name: string, allOf: unknown[]): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, JSON.stringify({ version: '1.0.0', anyOf: [{ authority: MAA, allOf }] }));
  return p;
}

describe('skr policy explain with a CVM token', () => {
  it('suggests the nested claims for a container-style policy (exit 1)', async () => {
    const r = await run('policy', 'explain', '--token', cvmToken, '--policy', policyFile('aci.json', [
      { claim: 'x-ms-attestation-type', equals: 'sevsnpvm' },
      { claim: 'x-ms-compliance-status', equals: 'azure-compliant-cvm' },
    ]));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/use "x-ms-isolation-tee\.x-ms-attestation-type"/);
    expect(r.out).toMatch(/use "x-ms-isolation-tee\.x-ms-compliance-status"/);
    expect(r.out).not.toMatch(/drop the "x-ms-isolation-tee\." prefix/);
  });

  it('suggests the top-level claim for a VM claim written nested, and no other name when the nested claim is there with another value', async () => {
    const r = await run('policy', 'explain', '--token', cvmToken, '--policy', policyFile('nested.json', [
      { claim: 'x-ms-isolation-tee.secureboot', equals: 'true' },
      { claim: 'x-ms-isolation-tee.x-ms-attestation-type', equals: 'azurevm' },
    ]));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/"secureboot" is one of the VM's top-level claims \(true\): use "secureboot"/);
    expect(r.out).not.toMatch(/drop the|use "x-ms-attestation-type"/);
  });
});
