/**
 * `/attest/maa`'s optional `maa_api`: "TdxVm" is MAA's endpoint for Intel TDX VMs; elsewhere it is a 400 that
 * says so, before anything is attested (the TDX stack's success case is tests/cvm/local-tdx.test.ts).
 */
import { startTestSidecar } from '../helpers/sidecar';
import { postJson } from '../helpers/sidecar';
import type { RunningSidecar } from '../../src/server/sidecar';

describe('/attest/maa maa_api', () => {
  let s: RunningSidecar;
  beforeAll(async () => {
    s = await startTestSidecar();
  });
  afterAll(() => s?.close());
  const runtime = Buffer.from('{"a":1}').toString('base64');

  it('refuses TdxVm on a platform that is not a TDX CVM, naming the platform', async () => {
    const r = await postJson(`${s.url}/attest/maa`, { maa_endpoint: 'sharedeus.eus.attest.azure.net', runtime_data: runtime, maa_api: 'TdxVm' });
    expect(r.status).toBe(400);
    expect(String(r.json.error)).toMatch(/maa_api "TdxVm" is MAA's endpoint for Intel TDX VMs; this sidecar runs on aci/);
  });

  it('refuses an unknown or non-string maa_api', async () => {
    const a = await postJson(`${s.url}/attest/maa`, { maa_endpoint: 'sharedeus.eus.attest.azure.net', runtime_data: runtime, maa_api: 'AzureGuest2' });
    expect(a.status).toBe(400);
    const b = await postJson(`${s.url}/attest/maa`, { maa_endpoint: 'sharedeus.eus.attest.azure.net', runtime_data: runtime, maa_api: 7 });
    expect(b.status).toBe(400);
    expect(String(b.json.error)).toMatch(/maa_api must be/);
  });
});
