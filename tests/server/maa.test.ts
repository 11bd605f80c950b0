import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { verifyMaaToken } from '../../src/maa/verify-token';
import { loadServerConfig } from '../../src/server/config';
import { createLogger } from '../../src/server/logger';
import { startSidecar, type RunningSidecar } from '../../src/server/sidecar';
import { SimulatedPlatform, TEST_ONLY_UVM_ROOT_SHA256 } from '../../src/snp/simulator';
import { postJson } from '../helpers/sidecar';

describe('POST /attest/maa through the MAA emulator', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-maa-'));
  const ca = loadOrCreateLocalCa(dir);
  const platform = new SimulatedPlatform();
  const fetch = createHttpsFetch({ extraCaPem: [ca.certPem] });
  let maa: MaaEmulator;
  let untrusting: MaaEmulator;
  let sidecar: RunningSidecar;
  let closedEndpoint: string;

  beforeAll(async () => {
    maa = await startMaaEmulator({ ca, trustedArkPem: [platform.arkPem], trustedUvmRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256] });
    untrusting = await startMaaEmulator({ ca });
    const closed = await startMaaEmulator({ ca });
    closedEndpoint = closed.endpoint;
    await closed.close();
    const base = loadServerConfig({ port: '0', simulate: true }, {});
    // The emulators are allowlisted by host:port, as `skr local` does.
    const config = { ...base, extraCaPem: [ca.certPem], allowedMaa: [...base.allowedMaa, maa.endpoint, untrusting.endpoint, closedEndpoint] };
    sidecar = await startSidecar({ config, platform, logger: createLogger({ silent: true }), securityContextDir: path.join(dir, 'ctx') });
  });
  afterAll(async () => {
    await sidecar.close();
    await maa.close();
    await untrusting.close();
    fetch.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('returns a token that verifies against https://<maaEndpoint>/certs with the claims MAA gives', async () => {
    const runtime = { keys: [{ kty: 'RSA', n: 'AQAB', e: 'AQAB', kid: 'k1', key_ops: ['encrypt'] }] };
    const runtimeBytes = Buffer.from(JSON.stringify(runtime));
    const res = await postJson(`${sidecar.url}/attest/maa`, { maa_endpoint: maa.endpoint, runtime_data: runtimeBytes.toString('base64') });
    expect(res.status).toBe(200);
    const token = res.json.token as string;
    const reportData = Buffer.concat([createHash('sha256').update(runtimeBytes).digest(), Buffer.alloc(32)]);
    const claims = await verifyMaaToken(token, { authority: `https://${maa.endpoint}`, fetch, expectedRuntimeData: runtimeBytes, expectedReportData: reportData });
    expect(claims['x-ms-attestation-type']).toBe('sevsnpvm');
    expect(claims['x-ms-compliance-status']).toBe('azure-compliant-uvm');
    expect(claims['x-ms-sevsnpvm-hostdata']).toBe(platform.hostData.toString('hex'));
    expect(claims['x-ms-sevsnpvm-reportdata']).toBe(reportData.toString('hex'));
    expect(claims['x-ms-runtime']).toEqual(runtime);
    expect((claims.exp as number) - (claims.iat as number)).toBe(28800);
    expect(claims.iss).toBe(`https://${maa.endpoint}`);
  });

  it('answers 403 with MAA\'s reason when MAA refuses the evidence', async () => {
    const res = await postJson(`${sidecar.url}/attest/maa`, { maa_endpoint: untrusting.endpoint, runtime_data: Buffer.from('{}').toString('base64') });
    expect(res.status).toBe(403);
    expect(res.json.error).toMatch(/ark-pinned/);
  });

  it('answers 502 when MAA cannot be reached', async () => {
    const res = await postJson(`${sidecar.url}/attest/maa`, { maa_endpoint: closedEndpoint, runtime_data: Buffer.from('{}').toString('base64') });
    expect(res.status).toBe(502);
    expect(res.json.error).toMatch(/maa|ECONNREFUSED|reach/i);
  }, 60_000);

  it.each([
    ['no maa_endpoint', { runtime_data: 'e30=' }, /maa_endpoint is required/],
    ['an http endpoint', { maa_endpoint: 'http://example.attest.azure.net', runtime_data: 'e30=' }, /http/i],
    ['runtime data that is not JSON', { maa_endpoint: 'x.attest.azure.net', runtime_data: Buffer.from('not json').toString('base64') }, /JSON/],
    ['a non-base64 runtime_data', { maa_endpoint: 'x.attest.azure.net', runtime_data: '%%%' }, /runtime_data is not valid base64/],
  ])('refuses %s with 400', async (_n, body, msg) => {
    const res = await postJson(`${sidecar.url}/attest/maa`, body);
    expect(res.status).toBe(400);
    expect(res.json.error).toMatch(msg);
  });
});
