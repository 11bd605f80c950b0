/** Transports against hostile or absent TPMs: a fake TCP peer that lies, and a missing device. */
import * as net from 'node:net';
import { DeviceTransport, SwtpmTcpTransport, TpmClient, TpmTransportError } from '../../src/tpm';

/** A TCP "TPM" that answers every command with `reply` (then optionally closes). */
async function fakeTpm(reply: Buffer, close = false): Promise<{ port: number; stop: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('data', () => {
      s.write(reply);
      if (close) s.end();
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('TPM transports with hostile peers', () => {
  it.each([
    ['a response declaring more than 8192 bytes', Buffer.from('80010001000000000000', 'hex'), /declares 65536 bytes/],
    ['a response declaring fewer than 10 bytes', Buffer.from('80010000000400000000', 'hex'), /declares 4 bytes/],
    ['a response that stops short and closes', Buffer.from('800100000020000000000000', 'hex'), /connection closed before the response was complete \(12 bytes received\)/],
    ['bytes beyond the declared size', Buffer.from('80010000000a00000000ff', 'hex'), /1 bytes beyond the declared response size/],
  ])('%s → TpmTransportError naming the command', async (_what, reply, msg) => {
    const peer = await fakeTpm(reply, true);
    const c = new TpmClient(new SwtpmTcpTransport({ port: peer.port }));
    try {
      const e = await c.pcrRead(0x000b, [0]).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(TpmTransportError);
      expect((e as Error).message).toMatch(/^TPM2_PCR_Read: swtpm 127\.0\.0\.1:\d+: /);
      expect((e as Error).message).toMatch(msg);
    } finally {
      await c.close();
      await peer.stop();
    }
  });

  it('a TPM that never answers times out with a typed error', async () => {
    const sockets: net.Socket[] = [];
    const server = net.createServer((s) => {
      sockets.push(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const c = new TpmClient(new SwtpmTcpTransport({ port: (server.address() as net.AddressInfo).port, timeoutMs: 200 }));
    try {
      await expect(c.startup()).rejects.toThrow(/^TPM2_Startup: swtpm .*: no response within 200 ms/);
    } finally {
      await c.close();
      sockets.forEach((s) => s.destroy());
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('no TPM device: ERR_TPM_TRANSPORT with ENOENT and what it means', async () => {
    const c = new TpmClient(new DeviceTransport('/nonexistent/tpmrm0'));
    const e = await c.pcrRead(0x000b, [0]).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TpmTransportError);
    expect((e as TpmTransportError).code).toBe('ERR_TPM_TRANSPORT');
    expect((e as TpmTransportError).errno).toBe('ENOENT');
    expect((e as Error).message).toMatch(/cannot open \/nonexistent\/tpmrm0: ENOENT \(no TPM device/);
    await c.close();
  });

  it.each([
    // /dev/null never has anything to read: a device that does not answer, given up at the deadline.
    ['/dev/null', /no response within 300 ms: the TPM is not answering/],
    ['/dev/zero', /response declares 0 bytes/],
  ])('a device that does not answer like a TPM (%s): typed error, the command named', async (dev, msg) => {
    const c = new TpmClient(new DeviceTransport(dev, { timeoutMs: 300 }));
    try {
      const e = await c.pcrRead(0x000b, [0]).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(TpmTransportError);
      expect((e as Error).message).toMatch(new RegExp(`^TPM2_PCR_Read: ${dev}: `));
      expect((e as Error).message).toMatch(msg);
    } finally {
      await c.close();
    }
  });
});
