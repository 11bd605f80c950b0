/**
 * `skr local --platform azure-cvm --tee tdx`, started in-process: swtpm behind a simulated paravisor that
 * writes HCL reports of type 4 (a simulated TD module's TDREPORT), the IMDS emulator's /acc/tdquote backed
 * by the simulated quoting enclave (TEST-ONLY Intel-like chain), and the MAA emulator verifying the TDX
 * evidence with src/tdx. Driven over HTTP: /status names the TEE, /attest/raw and /attest/combined answer the
 * TD quote and the HCL report, and oct, RSA and EC keys are released through the vTPM.
 */
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeJwt } from 'jose';
import { POLICY_TEMPLATES } from '../../src/akv/policy-templates';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { checkClaimsBinding, claimsUserData, parseTdxHclReport } from '../../src/cvm/hcl';
import { IntelTrustStore } from '../../src/tdx/roots';
import { TEST_ONLY_INTEL_ROOT_PEM } from '../../src/tdx/simulator';
import { checkTdReportBinding, verifyTdQuote } from '../../src/tdx/verify';
import { runCli } from '../helpers/cli';
import { jwkOf, localStackKeys, type LocalStackKeys } from '../helpers/local-stack-keys';
import { postJson } from '../helpers/sidecar';
import { swtpmAvailable, SWTPM_INSTALL } from '../helpers/swtpm';

const TEMPLATE = POLICY_TEMPLATES['azure-cvm'].map((g) => g.map((c) => ({ ...c })));
const simulatedIntel = new IntelTrustStore({ extraRootsPem: [TEST_ONLY_INTEL_ROOT_PEM], includeIntelRoot: false });

describe('skr local --platform azure-cvm --tee tdx', () => {
  let dir: string;
  let stack: LocalStack;
  let keys: LocalStackKeys;

  beforeAll(async () => {
    if (!swtpmAvailable()) throw new Error(`swtpm is not installed: ${SWTPM_INSTALL}`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-local-tdx-'));
    stack = await startLocalStack({ stateDir: dir, port: 0, platform: 'azure-cvm', tee: 'tdx', logLevel: 'error' });
    keys = localStackKeys(stack, TEMPLATE);
  }, 60_000);
  afterAll(async () => {
    keys?.destroy();
    await stack?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('/status names the platform and the TEE; the state file says tdx', async () => {
    expect(await (await globalThis.fetch(`${stack.sidecar.url}/status`)).json()).toEqual({ message: 'Status OK', platform: 'azure-cvm', tee: 'tdx' });
    expect(stack.state.tee).toBe('tdx');
  });

  it('/attest/raw answers the TD quote and the HCL report; they verify and bind the runtime data', async () => {
    const runtimeData = Buffer.from('{"purpose":"tdx raw"}');
    const r = await postJson(`${stack.sidecar.url}/attest/raw`, { runtime_data: runtimeData.toString('base64') });
    expect(r.status).toBe(200);
    expect(Object.keys(r.json).sort()).toEqual(['hcl_report', 'td_quote']);
    const quote = Buffer.from(String(r.json.td_quote), 'hex');
    const hcl = parseTdxHclReport(Buffer.from(String(r.json.hcl_report), 'hex'));
    const v = verifyTdQuote(quote, { trust: simulatedIntel });
    checkTdReportBinding(v.quote, hcl.tdReport);
    checkClaimsBinding(v.quote.body.reportData, hcl.claimsBytes);
    const want = Buffer.concat([createHash('sha256').update(runtimeData).digest(), Buffer.alloc(32)]).toString('hex').toUpperCase();
    expect(claimsUserData(hcl.claims)).toBe(want);
    // Never trusted by default: only the explicitly configured simulated root makes it verify.
    expect(() => verifyTdQuote(quote)).toThrow(/intel-root-pinned/);
  }, 30_000);

  it('/attest/combined answers them in base64 (the PCK chain is inside the quote)', async () => {
    const r = await postJson(`${stack.sidecar.url}/attest/combined`, { runtime_data: Buffer.from('{"a":1}').toString('base64') });
    expect(r.status).toBe(200);
    expect(Object.keys(r.json).sort()).toEqual(['hcl_evidence', 'td_quote', 'uvm_endorsements']);
    const v = verifyTdQuote(Buffer.from(String(r.json.td_quote), 'base64'), { trust: simulatedIntel });
    checkTdReportBinding(v.quote, parseTdxHclReport(Buffer.from(String(r.json.hcl_evidence), 'base64')).tdReport);
  }, 30_000);

  it('/attest/maa: an AzureGuest token with the TDX claims under x-ms-isolation-tee', async () => {
    const r = await postJson(`${stack.sidecar.url}/attest/maa`, { maa_endpoint: stack.state.maaEndpoint, runtime_data: Buffer.from('{"n":"1"}').toString('base64') });
    expect(r.json.error).toBeUndefined();
    expect(r.status).toBe(200);
    const claims = decodeJwt(String(r.json.token));
    expect(claims['x-ms-attestation-type']).toBe('azurevm');
    const tee = claims['x-ms-isolation-tee'] as Record<string, unknown>;
    expect(tee).toMatchObject({ 'x-ms-attestation-type': 'tdxvm', 'x-ms-compliance-status': 'azure-compliant-cvm', tdx_td_attributes_debug: false });
    expect(String(tee.tdx_mrtd)).toMatch(/^[0-9a-f]{96}$/);
  }, 30_000);

  it('/attest/maa with "maa_api": "TdxVm": MAA\'s TDX platform endpoint; the token binds the runtime data through the claims\' user-data', async () => {
    const runtimeData = Buffer.from('{"n":"tdxvm"}');
    const before = stack.maa.issuedTokens.length;
    const r = await postJson(`${stack.sidecar.url}/attest/maa`, { maa_endpoint: stack.state.maaEndpoint, runtime_data: runtimeData.toString('base64'), maa_api: 'TdxVm' });
    expect(r.json.error).toBeUndefined();
    expect(r.status).toBe(200);
    const claims = decodeJwt(String(r.json.token));
    // A platform token: TDX claims at the top level, no guest-attestation nesting, no vTPM key.
    expect(claims).toMatchObject({ 'x-ms-attestation-type': 'tdxvm', 'x-ms-compliance-status': 'azure-compliant-cvm' });
    expect(claims['x-ms-isolation-tee']).toBeUndefined();
    expect(String(claims.tdx_mrtd)).toMatch(/^[0-9a-f]{96}$/);
    const want = Buffer.concat([createHash('sha256').update(runtimeData).digest(), Buffer.alloc(32)]).toString('hex').toUpperCase();
    expect((claims['x-ms-runtime'] as Record<string, unknown>)['user-data']).toBe(want);
    expect(stack.maa.issuedTokens.length).toBe(before + 1);
    const bad = await postJson(`${stack.sidecar.url}/attest/maa`, { maa_endpoint: stack.state.maaEndpoint, runtime_data: runtimeData.toString('base64'), maa_api: 'SgxEnclave' });
    expect(bad.status).toBe(400);
    expect(String(bad.json.error)).toMatch(/maa_api must be "default" or "TdxVm"/);
  }, 30_000);

  it('releases oct (Managed HSM), RSA and EC (vault) keys with the CVM template through the vTPM', async () => {
    const bytes = randomBytes(32);
    const oct = await keys.release(await keys.importKey('tdx-oct', 'oct-HSM', bytes, stack.state.hsmEndpoint), stack.state.hsmEndpoint);
    expect(oct.json.error).toBeUndefined();
    expect(oct.status).toBe(200);
    expect(Buffer.from(jwkOf(oct).k, 'base64url')).toEqual(bytes);

    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const r = await keys.release(await keys.importKey('tdx-rsa', 'RSA-HSM', rsa, stack.state.vaultEndpoint), stack.state.vaultEndpoint);
    expect(r.status).toBe(200);
    const want = rsa.export({ format: 'jwk' });
    expect(jwkOf(r)).toMatchObject({ kty: 'RSA', n: want.n, d: want.d });

    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const e = await keys.release(await keys.importKey('tdx-ec', 'EC-HSM', ec, stack.state.vaultEndpoint), stack.state.vaultEndpoint);
    expect(e.status).toBe(200);
    const wantEc = ec.export({ format: 'jwk' });
    expect(jwkOf(e)).toMatchObject({ kty: 'EC', crv: 'P-256', x: wantEc.x, d: wantEc.d });
    // The vault saw a TDX CVM token.
    const last = decodeJwt(stack.maa.issuedTokens[stack.maa.issuedTokens.length - 1]);
    expect((last['x-ms-isolation-tee'] as Record<string, unknown>)['x-ms-attestation-type']).toBe('tdxvm');
  }, 120_000);

  it('a policy for SEV-SNP CVMs only is refused (403) on the TDX CVM; no key in the answer', async () => {
    const kid = await keys.importKey('tdx-snp-only', 'oct-HSM', randomBytes(32), stack.state.hsmEndpoint, [TEMPLATE[0]]);
    const r = await keys.release(kid, stack.state.hsmEndpoint);
    expect(r.status).toBe(403);
    expect(r.json.key).toBeUndefined();
  }, 60_000);

  it('skr demo --platform azure-cvm --tee tdx: released through the vTPM before and after a reboot, refusals explained', async () => {
    const stateFile = path.join(dir, 'demo-state.json');
    fs.writeFileSync(stateFile, JSON.stringify(stack.state));
    const r = await runCli('demo', '--platform', 'azure-cvm', '--tee', 'tdx', '--state-file', stateFile);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^the simulated confidential VM is an Intel TDX one/m);
    expect(r.out).toMatch(/x-ms-isolation-tee.x-ms-attestation-type = tdxvm/);
    expect(r.out).toMatch(/3\. refusal: a policy written with the top-level claim names[\s\S]*refused as expected \(403\)/);
    expect(r.out).toMatch(/released after the reboot, thumbprint [0-9a-f]{16} \(matches the imported key\)/);
    expect(r.out).toMatch(/demo OK/);
    const wrong = await runCli('demo', '--platform', 'azure-cvm', '--tee', 'sevsnp', '--state-file', stateFile);
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(/--tee sevsnp was given but the stack of .* is `skr local --platform azure-cvm --tee tdx`/);
  }, 120_000);
});
