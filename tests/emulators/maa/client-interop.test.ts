/** The sidecar's own MAA client and token verifier against the emulator: both ends of the wire agree. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHttpsFetch } from '../../../src/common/https-fetch';
import { loadOrCreateLocalCa } from '../../../src/emulators/ca';
import { startMaaEmulator, type MaaEmulator } from '../../../src/emulators/maa';
import { MaaClient, MaaRefusedError, verifyMaaToken } from '../../../src/maa';
import { reportDataFor } from '../../../src/snp/report';
import { SimulatedPlatform, simulatedUvmEndorsementBase64, TEST_ONLY_UVM_ROOT_SHA256 } from '../../../src/snp/simulator';

describe('MaaClient + verifyMaaToken against the MAA emulator', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-maa-interop-'));
  const ca = loadOrCreateLocalCa(dir);
  const platform = new SimulatedPlatform();
  const fetch = createHttpsFetch({ extraCaPem: [ca.certPem] });
  let emu: MaaEmulator;

  beforeAll(async () => {
    // The simulator's committed test UVM signer, as `skr local` would configure it.
    emu = await startMaaEmulator({ ca, trustedArkPem: [platform.arkPem], trustedUvmRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256] });
  });
  afterAll(async () => {
    await emu.close();
    fetch.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const runtimeData = Buffer.from(JSON.stringify({ keys: [{ kty: 'RSA', n: 'AQAB', e: 'AQAB', kid: 'k', key_ops: ['encrypt'] }] }));
  const input = () => ({
    report: platform.signReport({ reportData: reportDataFor(runtimeData) }),
    vcekPem: platform.vcekPem,
    chainPem: platform.askPem + platform.arkPem,
    uvmEndorsementBase64: simulatedUvmEndorsementBase64(platform.measurement),
    runtimeData,
  });

  it('attests, and the token verifies with issuer, runtime and REPORT_DATA bindings', async () => {
    for (const apiVersion of ['2020-10-01', '2022-08-01']) {
      const token = await new MaaClient({ fetch, apiVersion, retries: 0 }).attest(emu.endpoint, input());
      const claims = await verifyMaaToken(token, { authority: emu.url, fetch, expectedRuntimeData: runtimeData, expectedReportData: reportDataFor(runtimeData) });
      expect(claims['x-ms-compliance-status']).toBe('azure-compliant-uvm');
      expect(claims['x-ms-sevsnpvm-hostdata']).toBe(platform.hostData.toString('hex'));
    }
  });

  it('surfaces a refusal as MaaRefusedError carrying the emulator’s code and named check', async () => {
    const bad = { ...input(), runtimeData: Buffer.from('{"other":true}') };
    const err = await new MaaClient({ fetch, retries: 0 }).attest(emu.endpoint, bad).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MaaRefusedError);
    expect((err as MaaRefusedError).maaStatus).toBe(400);
    expect((err as MaaRefusedError).maaCode).toBe('InvalidParameter');
    expect((err as MaaRefusedError).maaMessage).toMatch(/^report-data: /);
  });
});
