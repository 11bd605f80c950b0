/**
 * POST /key/release on `skr local --platform azure-cvm`, started in-process: the sidecar's KEK is the
 * vTPM's ephemeral key (swtpm behind the simulated paravisor). Keys imported with the CVM policy template
 * come back as the vault holds them (oct from the Managed HSM, RSA and EC from the vault) for each `enc`
 * the sidecar is configured with; a policy with the top-level claim names is refused (403) naming the
 * claim, its `explanation` pointing at the x-ms-isolation-tee. name; after a simulated reboot (swtpm reset) the sidecar re-attests once and releases again.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { POLICY_TEMPLATES } from '../../src/akv/policy-templates';
import type { ReleaseEnc } from '../../src/akv/wrap';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { runCli } from '../helpers/cli';
import { jwkOf, localStackKeys, type LocalStackKeys } from '../helpers/local-stack-keys';
import { swtpmAvailable, SWTPM_INSTALL } from '../helpers/swtpm';

// One state directory for the three stacks (one after the other): the IMDS emulator keeps its signing
// key there, so managed-identity tokens cached in this process stay valid across them.
let dir: string;
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const CVM_CLAIMS: { claim: string; equals: string }[] = POLICY_TEMPLATES['azure-cvm'][0].map((c) => ({ ...c }));

describe.each<ReleaseEnc>(['RSA_AES_KEY_WRAP_256', 'CKM_RSA_AES_KEY_WRAP', 'RSA_AES_KEY_WRAP_384'])('/key/release on skr local --platform azure-cvm, SKR_RELEASE_ENC=%s', (enc) => {
  let stack: LocalStack;
  let keys: LocalStackKeys;

  beforeAll(async () => {
    if (!swtpmAvailable()) throw new Error(`swtpm is not installed: ${SWTPM_INSTALL}`);
    dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'skr-local-cvm-release-'));
    stack = await startLocalStack({ stateDir: dir, port: 0, platform: 'azure-cvm', logLevel: 'error', releaseEnc: enc });
    keys = localStackKeys(stack, [CVM_CLAIMS]);
  }, 60_000);
  afterAll(async () => {
    keys?.destroy();
    await stack?.close();
  });

  it('releases an oct key from the Managed HSM, an RSA and an EC key from the vault, as the vault holds them', async () => {
    const bytes = randomBytes(32);
    const oct = await keys.release(await keys.importKey('cvm-http-oct', 'oct-HSM', bytes, stack.state.hsmEndpoint), stack.state.hsmEndpoint);
    expect(oct.json.error).toBeUndefined();
    expect(oct.status).toBe(200);
    expect(Buffer.from(jwkOf(oct).k, 'base64url')).toEqual(bytes);

    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const r = await keys.release(await keys.importKey('cvm-http-rsa', 'RSA-HSM', rsa, stack.state.vaultEndpoint), stack.state.vaultEndpoint);
    expect(r.status).toBe(200);
    const want = rsa.export({ format: 'jwk' });
    expect(jwkOf(r)).toMatchObject({ kty: 'RSA', n: want.n, d: want.d, p: want.p, q: want.q });

    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const e = await keys.release(await keys.importKey('cvm-http-ec', 'EC-HSM', ec, stack.state.vaultEndpoint), stack.state.vaultEndpoint);
    expect(e.status).toBe(200);
    const wantEc = ec.export({ format: 'jwk' });
    expect(jwkOf(e)).toMatchObject({ kty: 'EC', crv: 'P-256', x: wantEc.x, y: wantEc.y, d: wantEc.d });
  }, 120_000);

  if (enc !== 'RSA_AES_KEY_WRAP_256') return;

  it('a policy with the top-level claim names is refused (403) naming the claim; no key in the answer', async () => {
    const kid = await keys.importKey('cvm-http-top-level', 'oct-HSM', randomBytes(32), stack.state.hsmEndpoint, [
      [
        { claim: 'x-ms-attestation-type', equals: 'sevsnpvm' },
        { claim: 'x-ms-compliance-status', equals: 'azure-compliant-cvm' },
      ],
    ]);
    const r = await keys.release(kid, stack.state.hsmEndpoint);
    expect(r.status).toBe(403);
    expect(String(r.json.error)).toMatch(/x-ms-attestation-type/);
    expect(r.json.key).toBeUndefined();
    // The explanation: the VM's top-level value against the policy's, and the hint to the nested name.
    const x = r.json.explanation as { closestBranch: { failing: { claim: string; wants: unknown; has?: unknown }[] }; hints: string[] };
    expect(x.closestBranch.failing).toContainEqual({ path: 'anyOf[0].allOf[0]', claim: 'x-ms-attestation-type', operator: 'equals', wants: 'sevsnpvm', present: true, has: 'azurevm' });
    expect(x.hints).toContainEqual(expect.stringContaining('use "x-ms-isolation-tee.x-ms-attestation-type"'));
  }, 60_000);

  it('after a simulated reboot (swtpm reset) the sidecar re-attests once and releases again', async () => {
    const bytes = randomBytes(32);
    const kid = await keys.importKey('cvm-http-reboot', 'oct-HSM', bytes, stack.state.hsmEndpoint);
    const first = await keys.release(kid, stack.state.hsmEndpoint);
    expect(first.status).toBe(200);
    const before = stack.maa.issuedTokens.length;
    // Reused within the boot: no new token.
    expect((await keys.release(kid, stack.state.hsmEndpoint)).status).toBe(200);
    expect(stack.maa.issuedTokens.length).toBe(before);
    await stack.reboot();
    const after = await keys.release(kid, stack.state.hsmEndpoint);
    expect(after.json.error).toBeUndefined();
    expect(after.status).toBe(200);
    expect(Buffer.from(jwkOf(after).k, 'base64url')).toEqual(bytes);
    // Exactly one new attestation: the cached token named the old boot's key.
    expect(stack.maa.issuedTokens.length).toBe(before + 1);
  }, 60_000);

  it('skr demo --platform azure-cvm: released through the vTPM (thumbprints match), three refusals explained, released after a reboot', async () => {
    const stateFile = path.join(dir, 'demo-state.json');
    fs.writeFileSync(stateFile, JSON.stringify(stack.state));
    const before = stack.maa.issuedTokens.length;
    const r = await runCli('demo', '--platform', 'azure-cvm', '--state-file', stateFile);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const out = r.out;
    expect(out).toMatch(/with the CVM release policy/);
    const thumbs = [...out.matchAll(/thumbprint ([0-9a-f]{16}) \(matches the imported key\)/g)].map((m) => m[1]);
    expect(thumbs).toHaveLength(2);
    expect(out).toContain(`material thumbprint ${thumbs[0]}`);
    expect(thumbs[1]).toBe(thumbs[0]);
    // Top-level claim names: the vault's 403, then policy explain naming the nested claim.
    expect(out).toMatch(/3\. refusal: a policy written with the top-level claim names[\s\S]*refused as expected \(403\): .*x-ms-attestation-type/);
    expect(out).toMatch(/skr policy explain: .*"x-ms-isolation-tee\.x-ms-attestation-type"/);
    expect(out).toMatch(/4\. refusal: compliance status[\s\S]*refused as expected \(403\): .*x-ms-compliance-status/);
    expect(out).toMatch(/5\. a simulated reboot[\s\S]*released after the reboot, thumbprint/);
    expect(out).toMatch(/demo OK/);
    // New tokens were issued (the demo's releases attest through MAA, not a cached answer of this test).
    expect(stack.maa.issuedTokens.length).toBeGreaterThan(before);
    // A demo against the wrong platform says so.
    const wrong = await runCli('demo', '--platform', 'aci', '--state-file', stateFile);
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(/--platform aci was given but the stack of .* is `skr local --platform azure-cvm`/);
  }, 120_000);
});
