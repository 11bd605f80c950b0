/**
 * Choosing the platform at start-up: --platform / --tpm parsing, `auto` refusing with everything it
 * looked for, azure-cvm refusing a TPM without the HCL index, and auto picking the CVM through --tpm on a
 * real swtpm provisioned as a simulated Azure CVM. Never a fallback to simulated evidence.
 */
import * as net from 'node:net';
import { ConfigError } from '../../src/common/errors';
import { ParavisorProxy, provisionSimulatedCvm } from '../../src/cvm/simulator';
import { SwtpmTcpTransport } from '../../src/tpm';
import { postJson, startError } from '../helpers/sidecar';
import { loadServerConfig, parsePlatform, parseTpmEndpoint } from '../../src/server/config';
import { startSidecar } from '../../src/server/sidecar';
import { startSwtpm, type Swtpm } from '../helpers/swtpm';

const none = { configfsRoot: '/nonexistent/tsm', sevGuestPath: '/nonexistent/sev-guest', sevPath: '/nonexistent/sev', tpmDevicePath: '/nonexistent/tpmrm0' };

describe('--platform and --tpm settings', () => {
  it('parses the platform (default auto) and refuses anything else', () => {
    expect(parsePlatform(undefined)).toBe('auto');
    expect(parsePlatform(' Azure-CVM ')).toBe('azure-cvm');
    expect(loadServerConfig({}, { SKR_PLATFORM: 'aci' }).platform).toBe('aci');
    expect(loadServerConfig({ platform: 'azure-cvm' }, { SKR_PLATFORM: 'aci' }).platform).toBe('azure-cvm');
    expect(() => parsePlatform('sgx')).toThrow('platform "sgx" is not one of auto, aci, azure-cvm');
  });

  it('parses TPM endpoints: loopback TCP or a device path, nothing else', () => {
    expect(parseTpmEndpoint('tcp:127.0.0.1:2321')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 2321 });
    expect(parseTpmEndpoint('tcp:localhost:2321')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 2321 });
    expect(parseTpmEndpoint('tcp:[::1]:2321')).toEqual({ kind: 'tcp', host: '::1', port: 2321 });
    expect(parseTpmEndpoint('/dev/tpmrm0')).toEqual({ kind: 'device', path: '/dev/tpmrm0' });
    expect(parseTpmEndpoint('device:/dev/tpm0')).toEqual({ kind: 'device', path: '/dev/tpm0' });
    expect(parseTpmEndpoint(undefined)).toBeUndefined();
    expect(() => parseTpmEndpoint('tcp:10.0.0.4:2321')).toThrow(/only loopback hosts .* TPM commands travel in the clear/);
    expect(() => parseTpmEndpoint('tcp:127.0.0.1:0')).toThrow(/port 0/);
    expect(() => parseTpmEndpoint('tcp:127.0.0.1:70000')).toThrow(ConfigError);
    expect(() => parseTpmEndpoint('tpmrm0')).toThrow(/neither tcp:HOST:PORT nor a device path/);
    expect(loadServerConfig({}, { SKR_TPM: 'tcp:127.0.0.1:9' }).tpm).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9 });
  });

  it('refuses settings that contradict each other', () => {
    expect(() => loadServerConfig({ simulate: true, platform: 'azure-cvm' }, {})).toThrow(/skr local --platform azure-cvm/);
    expect(() => loadServerConfig({ simulate: true, tpm: 'tcp:127.0.0.1:9' }, {})).toThrow(/--tpm does not go with --simulate/);
    expect(() => loadServerConfig({ platform: 'aci', tpm: '/dev/tpmrm0' }, {})).toThrow(/--tpm only applies to an Azure confidential VM/);
  });
});

describe('platform detection at start-up', () => {
  it('auto without any device refuses to start, naming every place it looked', async () => {
    const e = await startError({ config: loadServerConfig({ port: '0' }, {}), detect: none });
    expect(e).toMatchObject({ code: 'ERR_NO_DEVICE' });
    const msg = (e as Error).message;
    for (const where of ['/nonexistent/tsm', '/nonexistent/sev-guest', '/nonexistent/sev', '/nonexistent/tpmrm0 NV index 0x01400001 (HCL report)']) expect(msg).toContain(where);
    expect(msg).toMatch(/--platform aci\|azure-cvm/);
  });

  it('azure-cvm without a TPM refuses to start naming it; aci does not look at the TPM', async () => {
    const e = await startError({ config: loadServerConfig({ port: '0', platform: 'azure-cvm' }, {}), detect: none });
    expect(e).toMatchObject({ code: 'ERR_NO_DEVICE', message: expect.stringContaining('--platform azure-cvm: no Azure confidential VM vTPM: looked at /nonexistent/tpmrm0') });
    const aci = await startError({ config: loadServerConfig({ port: '0', platform: 'aci' }, {}), detect: none });
    expect(aci).toMatchObject({ code: 'ERR_NO_DEVICE' });
    expect((aci as Error).message).not.toContain('tpmrm0');
  });

  it('a refused TCP endpoint is named with the reason', async () => {
    // A port that was free a moment ago: nothing listens there.
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    const e = await startError({ config: loadServerConfig({ port: '0', platform: 'azure-cvm', tpm: `tcp:127.0.0.1:${port}` }, {}), detect: none });
    expect(e).toMatchObject({
      code: 'ERR_NO_DEVICE',
      message: `--platform azure-cvm: no Azure confidential VM vTPM: looked at tcp:127.0.0.1:${port} NV index 0x01400001 (HCL report): TPM2_NV_ReadPublic: cannot connect to swtpm 127.0.0.1:${port}: ECONNREFUSED`,
    });
  });

  describe('on a real swtpm', () => {
    let tpm: Swtpm;
    beforeAll(async () => {
      tpm = await startSwtpm();
    }, 30_000);
    afterAll(async () => {
      await tpm?.stop();
    });

    it('a TPM without the HCL index is not an Azure CVM', async () => {
      const e = await startError({ config: loadServerConfig({ port: '0', platform: 'azure-cvm', tpm: `tcp:127.0.0.1:${tpm.port}` }, {}), detect: none });
      expect(e).toMatchObject({ code: 'ERR_NO_DEVICE', message: expect.stringContaining('the TPM has no such index (not an Azure confidential VM)') });
    });

    it('auto with --tpm picks the CVM once the vTPM holds the HCL report; /status says so', async () => {
      await tpm.use((c) => provisionSimulatedCvm(c));
      const s = await startSidecar({ config: { ...loadServerConfig({ port: '0', tpm: `tcp:127.0.0.1:${tpm.port}` }, {}), logLevel: 'error' }, detect: none });
      try {
        expect(s.platformName).toBe('azure-cvm');
        expect(s.evidence.kind).toBe('azure-cvm-vtpm');
        expect(s.evidence.description).toContain(`swtpm 127.0.0.1:${tpm.port}`);
        expect(await (await fetch(`${s.url}/status`)).json()).toEqual({ message: 'Status OK', platform: 'azure-cvm', tee: 'sevsnp' });
      } finally {
        await s.close();
        s.logger.close();
      }
    }, 30_000);

    it('a report the paravisor did not regenerate is never served as bound to the caller (ERR_HCL_USER_DATA_STALE)', async () => {
      // Straight to swtpm, no paravisor: the user-data write does not change the HCL report.
      const s = await startSidecar({ config: { ...loadServerConfig({ port: '0', platform: 'azure-cvm', tpm: `tcp:127.0.0.1:${tpm.port}` }, {}), logLevel: 'error' }, detect: none });
      try {
        const r = await postJson(`${s.url}/attest/raw`, { runtime_data: Buffer.from('{"a":1}').toString('base64') });
        expect(r.status).toBe(500);
        expect(String(r.json.error)).toMatch(/^vTPM user-data refresh \(write NV 0x01400002, read NV 0x01400001\): the HCL report still carries other user-data /);
        expect(r.json.report).toBeUndefined();
      } finally {
        await s.close();
        s.logger.close();
      }
    }, 30_000);

    it('an AK certificate not provisioned yet: /attest/maa fails naming the step and saying to retry later', async () => {
      const cvm = await tpm.use((c) => provisionSimulatedCvm(c, { akCertificate: 'missing' }));
      const proxy = new ParavisorProxy(cvm.transport(new SwtpmTcpTransport({ port: tpm.port })));
      const port = await proxy.listen(0);
      try {
        const s = await startSidecar({ config: { ...loadServerConfig({ port: '0', platform: 'azure-cvm', tpm: `tcp:127.0.0.1:${port}` }, {}), logLevel: 'error' }, detect: none });
        try {
          const r = await postJson(`${s.url}/attest/maa`, { maa_endpoint: 'sharedeus.eus.attest.azure.net', runtime_data: Buffer.from('{"a":1}').toString('base64') });
          expect(r.status).toBe(500);
          expect(String(r.json.error)).toMatch(/^vTPM evidence \(HCL refresh, AK, quote, ephemeral key\): .*not provisioned yet.*retry later/);
          expect(r.json.token).toBeUndefined();
        } finally {
          await s.close();
          s.logger.close();
        }
      } finally {
        await proxy.close();
      }
    }, 30_000);
  });
});
