/**
 * `skr local --platform azure-cvm`, started in-process: a real swtpm provisioned as a simulated Azure
 * confidential VM behind the simulated paravisor's proxy, the MAA emulator's /attest/AzureGuest, IMDS THIM,
 * and the sidecar with --platform azure-cvm. Driven over HTTP: the guest token with the §6 claims, the HCL
 * report bound to the caller's runtime data, /status (key release: local-cvm-release.test.ts), a vTPM
 * that disappears mid-request, and a clean stop (swtpm gone by PID, its state removed).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { splitPem } from '../../src/certs/pem';
import { TrustStore } from '../../src/certs/roots';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { parseHclReport, verifyHclReport } from '../../src/cvm/hcl';
import { TPM_KEY_KID } from '../../src/cvm/guest-attestation';
import { RUNTIME_DATA_PAYLOAD_KEY } from '../../src/cvm/guest-attester';
import { swtpmAvailable, SWTPM_INSTALL } from '../helpers/swtpm';
import { postJson } from '../helpers/sidecar';
import { runCli } from '../helpers/cli';

function claimsOf(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8')) as Record<string, unknown>;
}
const userDataFor = (runtime: Buffer) => Buffer.concat([createHash('sha256').update(runtime).digest(), Buffer.alloc(32)]).toString('hex').toUpperCase();

describe('skr local --platform azure-cvm (swtpm + simulated paravisor + MAA AzureGuest)', () => {
  let dir: string;
  let stack: LocalStack;
  let stopped = false;

  beforeAll(async () => {
    if (!swtpmAvailable()) throw new Error(`swtpm is not installed: ${SWTPM_INSTALL}`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-local-cvm-'));
    stack = await startLocalStack({ stateDir: dir, port: 0, platform: 'azure-cvm', logLevel: 'error' });
  }, 60_000);
  afterAll(async () => {
    if (!stopped) await stack?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const runtime = Buffer.from(JSON.stringify({ purpose: 'cvm-test', nonce: 'b2f1' }));

  it('publishes the platform and the vTPM endpoint in its state; /status says azure-cvm and its TEE (sevsnp)', async () => {
    expect(stack.state.platform).toBe('azure-cvm');
    expect(stack.state.tpm?.endpoint).toMatch(/^tcp:127\.0\.0\.1:\d+$/);
    expect(stack.sidecar.platformName).toBe('azure-cvm');
    const res = await fetch(`${stack.sidecar.url}/status`);
    expect(await res.json()).toEqual({ message: 'Status OK', platform: 'azure-cvm', tee: 'sevsnp' });
  });

  it('/attest/maa returns a guest token with the §6 claims, bound to the runtime data twice', async () => {
    const r = await postJson(`${stack.sidecar.url}/attest/maa`, { maa_endpoint: stack.state.maaEndpoint, runtime_data: runtime.toString('base64') });
    expect(r.status).toBe(200);
    const token = r.json.token as string;
    expect(stack.maa.issuedTokens).toContain(token);
    const c = claimsOf(token);
    expect(c['x-ms-attestation-type']).toBe('azurevm');
    expect(c['x-ms-azurevm-vmid']).toBe(stack.cvm?.vmUniqueId);
    const tee = c['x-ms-isolation-tee'] as Record<string, unknown>;
    expect(tee['x-ms-attestation-type']).toBe('sevsnpvm');
    expect(tee['x-ms-compliance-status']).toBe('azure-compliant-cvm');
    // The HCL user data is sha256(runtime data) + 32 zero bytes.
    expect((tee['x-ms-runtime'] as Record<string, unknown>)['user-data']).toBe(userDataFor(runtime));
    const top = c['x-ms-runtime'] as { 'client-payload': Record<string, string>; keys: { kid: string; key_ops: string[] }[] };
    expect(top['client-payload']).toEqual({ [RUNTIME_DATA_PAYLOAD_KEY]: runtime.toString('base64') });
    expect(top.keys.map((k) => k.kid)).toEqual([TPM_KEY_KID]);
    expect(top.keys[0].key_ops).toEqual(['encrypt']);
  }, 60_000);

  it('/attest/raw returns the SNP report and the HCL report whose claims carry sha256(runtime data)', async () => {
    const r = await postJson(`${stack.sidecar.url}/attest/raw`, { runtime_data: runtime.toString('base64') });
    expect(r.status).toBe(200);
    const hcl = parseHclReport(Buffer.from(r.json.hcl_report as string, 'hex'));
    expect(hcl.claims['user-data']).toBe(userDataFor(runtime));
    expect(hcl.snpReportBytes.toString('hex')).toBe(r.json.report);
    const chain = { vcekPem: stack.platform.vcekPem, chainPem: stack.platform.askPem + stack.platform.arkPem, tcbm: stack.platform.reportedTcb, source: 'test' };
    // Claims binding, VMPL 0, then the embedded report against the (test) AMD chain.
    const v = verifyHclReport(hcl, chain, new TrustStore({ extraRootsPem: [stack.platform.arkPem] }));
    expect(v.verified.product).toBe('Milan');
    // The answer as saved by a client verifies with the CLI too.
    const answer = path.join(dir, 'raw-answer.json');
    fs.writeFileSync(answer, JSON.stringify(r.json));
    const certs = path.join(dir, 'chain.pem');
    fs.writeFileSync(certs, stack.platform.vcekPem + stack.platform.askPem + stack.platform.arkPem);
    const cli = await runCli('report', 'verify', answer, '--certs', certs, '--trust-simulator');
    expect(cli.err).toBe('');
    expect(cli.out).toMatch(/^OK: HCL runtime claims \(\d+ bytes\) bound by REPORT_DATA, VMPL 0; report signed by VCEK/);
  }, 30_000);

  it('/attest/combined returns the HCL evidence with the VCEK chain from IMDS THIM', async () => {
    const other = Buffer.from('{"purpose":"combined"}');
    const r = await postJson(`${stack.sidecar.url}/attest/combined`, { runtime_data: other.toString('base64') });
    expect(r.status).toBe(200);
    const hcl = parseHclReport(Buffer.from(r.json.hcl_evidence as string, 'base64'));
    expect(hcl.snpReportBytes.equals(Buffer.from(r.json.evidence as string, 'base64'))).toBe(true);
    expect(hcl.claims['user-data']).toBe(userDataFor(other));
    const pems = splitPem(Buffer.from(r.json.endorsements as string, 'base64').toString('utf8'));
    const chain = { vcekPem: pems[0], chainPem: pems[1] + pems[2], tcbm: BigInt('0x' + (r.json.endorsed_tcb as string)), source: 'test' };
    expect(() => verifyHclReport(hcl, chain, new TrustStore({ extraRootsPem: [stack.platform.arkPem] }))).not.toThrow();
  }, 30_000);

  it('/attest/maa refuses a token whose signature does not verify (no token is returned)', async () => {
    stack.maa.faults.inject({ route: 'attest', kind: 'tampered-jws', times: 1 });
    const r = await postJson(`${stack.sidecar.url}/attest/maa`, { maa_endpoint: stack.state.maaEndpoint, runtime_data: runtime.toString('base64') });
    expect(r.status).toBe(403);
    expect(String(r.json.error)).toMatch(/^MAA token signature does not verify with key /);
    expect(r.json.token).toBeUndefined();
  }, 60_000);

  it('/attest/maa retries MAA on a 503 and still returns a verified token', async () => {
    stack.maa.faults.inject({ route: 'attest', kind: 'status', status: 503, times: 1 });
    const r = await postJson(`${stack.sidecar.url}/attest/maa`, { maa_endpoint: stack.state.maaEndpoint, runtime_data: runtime.toString('base64') });
    expect(r.status).toBe(200);
    expect(stack.maa.issuedTokens).toContain(r.json.token);
  }, 60_000);

  it('a vTPM that disappears mid-request: a precise 500 naming the step, no simulated fallback', async () => {
    const pid = stack.state.tpm?.swtpmPid as number;
    process.kill(pid, 'SIGKILL');
    const r = await postJson(`${stack.sidecar.url}/attest/raw`, { runtime_data: runtime.toString('base64') });
    expect(r.status).toBe(500);
    expect(String(r.json.error)).toMatch(/^vTPM user-data refresh \(write NV 0x01400002, read NV 0x01400001\): /);
    expect(r.json.report).toBeUndefined();
  }, 30_000);

  it('stops cleanly after the TPM died: swtpm reaped, its state directory removed', async () => {
    const pid = stack.state.tpm?.swtpmPid as number;
    const stateDir = stack.state.tpm?.swtpmStateDir as string;
    expect(stateDir).toContain('skr-local-swtpm-');
    await stack.close();
    stopped = true;
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
    expect(fs.existsSync(stateDir)).toBe(false);
  });
});
