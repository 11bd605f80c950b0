import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from '../helpers/cli';
import { buildReleasePolicy, encodeReleasePolicy } from '../../src/akv/policy';

const run = runCli;

const b64u = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (claims: Record<string, unknown>) => `${b64u({ alg: 'RS256', typ: 'JWT' })}.${b64u(claims)}.c2ln`;

describe('skr policy explain', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-explain-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const hostdata = 'aa'.repeat(32);
  const policy = buildReleasePolicy({
    authority: 'https://sharedeus2.eus2.attest.azure.net',
    anyOfGroups: [[
      { claim: 'x-ms-sevsnpvm-hostdata', equals: hostdata },
      { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' },
      { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' },
    ]],
  });
  const policyFile = path.join(tmp, 'policy.json');
  fs.writeFileSync(policyFile, JSON.stringify(policy));
  const good = {
    iss: 'https://sharedeus2.eus2.attest.azure.net',
    'x-ms-sevsnpvm-hostdata': hostdata,
    'x-ms-compliance-status': 'azure-compliant-uvm',
    'x-ms-sevsnpvm-is-debuggable': false,
  };

  it('grants (exit 0) and shows each condition with the actual value', async () => {
    const r = await run('policy', 'explain', '--policy', policyFile, '--token', jwt(good));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/PASS.*x-ms-sevsnpvm-is-debuggable/);
    expect(r.out).toMatch(/RELEASE WOULD BE GRANTED/);
  });

  it('denies (exit 1) naming the failing hostdata and pointing at skr policy digest', async () => {
    const tokenFile = path.join(tmp, 'token.json');
    fs.writeFileSync(tokenFile, JSON.stringify({ token: jwt({ ...good, 'x-ms-sevsnpvm-hostdata': 'bb'.repeat(32) }) }));
    // The policy as the vault stores it (release_policy with base64url data) is accepted too.
    const rpFile = path.join(tmp, 'key.json');
    fs.writeFileSync(rpFile, JSON.stringify({ key: { kid: 'x' }, release_policy: encodeReleasePolicy(policy) }));
    const r = await run('policy', 'explain', '--policy', rpFile, '--token', tokenFile);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/FAIL.*x-ms-sevsnpvm-hostdata/);
    expect(r.out).toMatch(/skr policy digest/);
    expect(r.out).toMatch(/RELEASE WOULD BE DENIED/);
  });

  it('points at a wrong-region authority', async () => {
    const r = await run('policy', 'explain', '--policy', policyFile, '--token', jwt({ ...good, iss: 'https://shareduks.uks.attest.azure.net' }));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/shareduks/);
  });

  it('refuses input that is not a token or policy', async () => {
    expect((await run('policy', 'explain', '--policy', policyFile, '--token', 'nonsense')).code).toBe(2);
    const notJson = path.join(tmp, 'x.txt');
    fs.writeFileSync(notJson, 'nope');
    expect((await run('policy', 'explain', '--policy', notJson, '--token', jwt(good))).code).toBe(2);
  });
});
