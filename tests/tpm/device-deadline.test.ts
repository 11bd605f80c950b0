/**
 * DeviceTransport against a device that stops answering (issue 20, item 2): a pseudo-terminal standing in
 * for /dev/tpmrm0, forwarding to a real swtpm or silent. Every command has a deadline; a timed-out
 * command gives up the open file, and once the device answers again the next commands succeed.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { DeviceTransport, PCRS_0_7, TpmClient, TpmTransportError } from '../../src/tpm';
import { runCli } from '../helpers/cli';
import { startFakeTpmDevice, type FakeTpmDevice } from '../helpers/fake-tpm-device';
import { startSwtpm, type Swtpm } from '../helpers/swtpm';

jest.setTimeout(60_000);

describe('DeviceTransport on a TPM device that stops answering', () => {
  let tpm: Swtpm;
  let dev: FakeTpmDevice;
  let client: TpmClient;

  beforeAll(async () => {
    tpm = await startSwtpm();
    // swtpm serves one connection at a time: the helper's is the only one.
    dev = await startFakeTpmDevice(tpm.port);
    client = new TpmClient(new DeviceTransport(dev.path, { timeoutMs: 500 }));
  });
  afterAll(async () => {
    await client?.close();
    await dev?.stop();
    await tpm?.stop();
  });

  it('answers through the device while it forwards', async () => {
    expect((await client.pcrRead(PCRS_0_7.hash, [0])).get(0)).toHaveLength(32);
  });

  it('a silent device: the command fails at its deadline with a typed error (it does not hang), and so does the one queued behind it', async () => {
    await dev.setMode('silent');
    const first = client.pcrRead(PCRS_0_7.hash, [0]).catch((e: unknown) => e);
    const queued = client.pcrRead(PCRS_0_7.hash, [1]).catch((e: unknown) => e);
    const [a, b] = await Promise.all([first, queued]);
    for (const e of [a, b]) {
      expect(e).toBeInstanceOf(TpmTransportError);
      expect((e as TpmTransportError).errno).toBe('ETIMEDOUT');
      expect((e as Error).message).toMatch(new RegExp(`^TPM2_PCR_Read: ${dev.path}: no response within 500 ms: the TPM is not answering`));
    }
  });

  it('once the device answers again, the next commands succeed on a reopened device', async () => {
    await dev.setMode('forward');
    for (let i = 0; i < 3; i++) expect((await client.pcrRead(PCRS_0_7.hash, [0, 1, 2])).size).toBe(3);
  });

  it('skr release --tpm DEVICE on a silent device ends with the TPM timeout instead of hanging; nothing is written', async () => {
    await dev.setMode('silent');
    // An IMDS that accepts and never answers: the identity token cannot end the release first.
    const held: net.Socket[] = [];
    const imds = net.createServer((s) => held.push(s.on('error', () => undefined)));
    await new Promise<void>((r) => imds.listen(0, '127.0.0.1', () => r()));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-release-silent-'));
    const out = path.join(dir, 'k.key');
    try {
      const port = (imds.address() as net.AddressInfo).port;
      const r = await runCli('release', '--maa', 'x.attest.azure.net', '--akv', 'y.vault.azure.net', '--kid', 'k', '--tpm', dev.path, '--tpm-timeout', '0.5', '--imds', `http://127.0.0.1:${port}`, '--out', out, '--format', 'raw');
      expect(r.code).not.toBe(0);
      expect(r.err).toMatch(/no response within 500 ms: the TPM is not answering/);
      expect(fs.existsSync(out)).toBe(false);
    } finally {
      held.forEach((s) => s.destroy());
      await new Promise<void>((r) => imds.close(() => r()));
      fs.rmSync(dir, { recursive: true, force: true });
      await dev.setMode('forward');
    }
  });
});
