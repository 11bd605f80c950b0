import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { splitPem } from '../../src/certs/pem';
import { TrustStore } from '../../src/certs/roots';
import { verifyReport } from '../../src/certs/verify';
import { verifyUvmEndorsement } from '../../src/cose/uvm-endorsement';
import { TEST_ONLY_UVM_ROOT_SHA256 } from '../../src/snp/simulator';
import { parseReport } from '../../src/snp/report';
import { tcbToHex } from '../../src/snp/tcb';
import type { RunningSidecar } from '../../src/server/sidecar';
import { postJson, startTestSidecar } from '../helpers/sidecar';
import { certificatesFromPem } from '../../src/asn1/certificate';

describe('sidecar attestation endpoints (simulated platform, real HTTP on loopback)', () => {
  let sidecar: RunningSidecar;
  beforeAll(async () => {
    sidecar = await startTestSidecar();
  });
  afterAll(() => sidecar.close());

  it('answers /status', async () => {
    const res = await fetch(`${sidecar.url}/status`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ message: 'Status OK', platform: 'aci' });
  });

  it('binds sha256(runtime_data) into /attest/raw and the report verifies against /attest/combined', async () => {
    const runtime = Buffer.from('{"keys":[]}');
    const raw = await postJson(`${sidecar.url}/attest/raw`, { runtime_data: runtime.toString('base64') });
    expect(raw.status).toBe(200);
    expect(raw.json.report).toMatch(/^[0-9a-f]{2368}$/);
    const report = Buffer.from(raw.json.report as string, 'hex');
    const parsed = parseReport(report);
    expect(parsed.reportData).toEqual(Buffer.concat([createHash('sha256').update(runtime).digest(), Buffer.alloc(32)]));

    const combined = await postJson(`${sidecar.url}/attest/combined`, { runtime_data: runtime.toString('base64') });
    expect(combined.status).toBe(200);
    expect(Object.keys(combined.json).sort()).toEqual(['endorsed_tcb', 'endorsements', 'evidence', 'uvm_endorsements']);
    const pems = splitPem(Buffer.from(combined.json.endorsements as string, 'base64').toString('utf8'));
    expect(pems).toHaveLength(3);
    expect(certificatesFromPem(pems[0])[0].subject).toContain('CN=SEV-VCEK');
    // Trust exactly the ARK that came in the same endorsements: the chain must close on it.
    const trust = new TrustStore({ extraRootsPem: [pems[2]], includeAmdRoots: false });
    const chain = { vcekPem: pems[0], chainPem: pems[1] + pems[2], tcbm: BigInt('0x' + (combined.json.endorsed_tcb as string)), source: 'test' };
    const v = verifyReport(report, chain, trust);
    expect(tcbToHex(v.vcekTcb)).toBe(combined.json.endorsed_tcb);
    expect(combined.json.endorsed_tcb).toBe(tcbToHex(parsed.reportedTcb));
    // The combined evidence is a fresh report with the same binding.
    const evidence = parseReport(Buffer.from(combined.json.evidence as string, 'base64'));
    expect(evidence.reportData).toEqual(parsed.reportData);
    verifyReport(Buffer.from(combined.json.evidence as string, 'base64'), chain, trust);
    // The UVM endorsement is the platform's reference info, endorsing this report's launch measurement.
    const uvm = verifyUvmEndorsement(combined.json.uvm_endorsements as string, { trustedRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256] });
    expect(uvm.launchMeasurement).toBe(evidence.measurement.toString('hex'));
  });

  it('the simulated HOST_DATA is sha256 of the security policy it publishes', async () => {
    const policyB64 = fs.readFileSync(path.join(sidecar.securityContextDir!, 'security-policy-base64'), 'utf8');
    const raw = await postJson(`${sidecar.url}/attest/raw`, { runtime_data: 'aGVsbG8=' });
    const r = parseReport(Buffer.from(raw.json.report as string, 'hex'));
    expect(r.hostData.toString('hex')).toBe(createHash('sha256').update(Buffer.from(policyB64, 'base64')).digest('hex'));
  });

  it('accepts URL-safe base64 and any Content-Type', async () => {
    const bytes = Buffer.from([0xfb, 0xff, 0xfe, 0x01]);
    const res = await fetch(`${sidecar.url}/attest/raw`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: JSON.stringify({ runtime_data: bytes.toString('base64url') }),
    });
    expect(res.status).toBe(200);
    const r = parseReport(Buffer.from(((await res.json()) as { report: string }).report, 'hex'));
    expect(r.reportData.subarray(0, 32)).toEqual(createHash('sha256').update(bytes).digest());
  });

  it.each([
    ['missing runtime_data', {}, /runtime_data is required/],
    ['runtime_data not a string', { runtime_data: 5 }, /runtime_data must be a string/],
    ['empty runtime_data', { runtime_data: '' }, /runtime_data must not be empty/],
    ['not base64', { runtime_data: 'not base64!' }, /runtime_data is not valid base64/],
    ['mixed alphabets', { runtime_data: 'ab+_' }, /runtime_data is not valid base64/],
    ['a JSON array', '[1,2]', /JSON object/],
    ['not JSON', '{"runtime_data":', /not valid JSON/],
    ['empty body', '', /body is empty/],
  ])('refuses %s with 400 naming the problem', async (_name, body, message) => {
    for (const route of ['/attest/raw', '/attest/combined']) {
      const res = await postJson(`${sidecar.url}${route}`, body);
      expect(res.status).toBe(400);
      expect(res.json.error).toMatch(message);
      expect(JSON.stringify(res.json)).not.toMatch(/at .*\.(ts|js):\d+/);
    }
  });

  it('refuses bodies over 1 MiB with 413 and keeps serving', async () => {
    const big = JSON.stringify({ runtime_data: 'A'.repeat(1024 * 1024 + 10) });
    const res = await postJson(`${sidecar.url}/attest/raw`, big);
    expect(res.status).toBe(413);
    expect(res.json.error).toMatch(/1 MiB/);
    const ok = await postJson(`${sidecar.url}/attest/raw`, { runtime_data: 'aGVsbG8=' });
    expect(ok.status).toBe(200);
  });

  it('answers unknown routes with a JSON 404', async () => {
    const res = await postJson(`${sidecar.url}/attest/nope`, {});
    expect(res.status).toBe(404);
    expect(res.json.error).toMatch(/no route POST \/attest\/nope/);
  });
});

describe('sidecar without a device', () => {
  it('refuses to start without --simulate when no device exists, saying how to simulate', async () => {
    await expect(
      startTestSidecar({ simulate: false, detect: { configfsRoot: '/nonexistent/tsm', sevGuestPath: '/nonexistent/sev-guest', sevPath: '/nonexistent/sev' } }),
    ).rejects.toMatchObject({ code: 'ERR_NO_DEVICE', message: expect.stringContaining('no SEV-SNP device found; use --simulate for local development') });
  });

  it('turns a device failure into a JSON 500 naming the cause, and keeps serving', async () => {
    // /dev/null exists but is no SEV guest device: the ioctl fails with ENOTTY.
    const s = await startTestSidecar({ simulate: false, detect: { configfsRoot: '/nonexistent/tsm', sevGuestPath: '/dev/null' } });
    try {
      for (let i = 0; i < 2; i++) {
        const res = await postJson(`${s.url}/attest/raw`, { runtime_data: 'aGVsbG8=' });
        expect(res.status).toBe(500);
        expect(res.json.error).toMatch(/\/dev\/null.*ENOTTY/);
      }
      expect((await fetch(`${s.url}/status`)).status).toBe(200);
    } finally {
      await s.close();
    }
  });
});
