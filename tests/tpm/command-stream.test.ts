/**
 * readTpmCommands on a real loopback connection: a client writes raw bytes (split, coalesced, lying
 * about sizes); the test observes which commands the handler got, in what order, and whether the
 * server side closed the connection.
 */
import * as net from 'node:net';
import { HEADER_BYTES, MAX_RESPONSE_BYTES, readTpmCommands } from '../../src/tpm';

/** A TPM command header (tag, size, command code) padded to `size` bytes with `fill`. */
function command(size: number, cc: number, fill = 0): Buffer {
  const b = Buffer.alloc(Math.max(size, HEADER_BYTES), fill);
  b.writeUInt16BE(0x8001, 0);
  b.writeUInt32BE(size, 2);
  b.writeUInt32BE(cc, 6);
  return b;
}

/** A server whose one connection is read with readTpmCommands(onCommand); the client end is returned. */
async function serve(onCommand: (cmd: Buffer, s: net.Socket) => Promise<boolean>) {
  const got: Buffer[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => s.destroy());
    readTpmCommands(s, (cmd) => {
      got.push(cmd);
      return onCommand(cmd, s);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  client.on('error', () => undefined);
  await new Promise<void>((r) => client.once('connect', () => r()));
  const replies: Buffer[] = [];
  client.on('data', (d: Buffer) => replies.push(d));
  const closed = new Promise<void>((r) => client.once('close', () => r()));
  return {
    got,
    client,
    closed,
    replies: () => Buffer.concat(replies),
    stop: async () => {
      client.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const echo = async (cmd: Buffer, s: net.Socket) => {
  s.write(cmd.subarray(6, 10));
  return true;
};
const until = async (cond: () => boolean) => {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
};

describe('readTpmCommands', () => {
  it('frames commands split across writes and several in one write, one at a time, in order', async () => {
    const t = await serve(echo);
    try {
      const a = command(12, 1, 0xaa);
      const b = command(10, 2);
      const c = command(300, 3, 0xcc);
      t.client.write(a.subarray(0, 3));
      await new Promise((r) => setTimeout(r, 20));
      t.client.write(Buffer.concat([a.subarray(3), b, c.subarray(0, 100)]));
      await new Promise((r) => setTimeout(r, 20));
      t.client.write(c.subarray(100));
      await until(() => t.got.length === 3);
      expect(t.got.map((x) => x.toString('hex'))).toEqual([a, b, c].map((x) => x.toString('hex')));
      await until(() => t.replies().length === 12);
      expect(t.replies().toString('hex')).toBe('000000010000000200000003');
    } finally {
      await t.stop();
    }
  });

  it('does not hand over the next command before the previous one has been handled', async () => {
    let release: () => void = () => undefined;
    let active = 0;
    let most = 0;
    const t = await serve(async (cmd, s) => {
      active++;
      most = Math.max(most, active);
      if (cmd.readUInt32BE(6) === 1) await new Promise<void>((r) => (release = r));
      active--;
      return echo(cmd, s);
    });
    try {
      t.client.write(Buffer.concat([command(10, 1), command(10, 2)]));
      await until(() => t.got.length === 1);
      await new Promise((r) => setTimeout(r, 30));
      expect(t.got).toHaveLength(1);
      release();
      await until(() => t.got.length === 2);
      expect(t.got.map((c) => c.readUInt32BE(6))).toEqual([1, 2]);
      expect(most).toBe(1);
    } finally {
      await t.stop();
    }
  });

  it.each([
    ['declares fewer bytes than a header', command(HEADER_BYTES - 1, 1)],
    ['declares more than MAX_RESPONSE_BYTES', command(MAX_RESPONSE_BYTES + 1, 1).subarray(0, HEADER_BYTES)],
  ])('a command that %s: connection closed, nothing handled', async (_what, bytes) => {
    const t = await serve(echo);
    try {
      t.client.write(bytes);
      await t.closed;
      expect(t.got).toHaveLength(0);
    } finally {
      await t.stop();
    }
  });

  it('more than 2 * MAX_RESPONSE_BYTES waiting unread: connection closed', async () => {
    const t = await serve(() => new Promise<boolean>(() => undefined)); // never settles: nothing is read after the first
    try {
      t.client.write(command(10, 1));
      await until(() => t.got.length === 1);
      t.client.write(Buffer.alloc(MAX_RESPONSE_BYTES * 2 + 1));
      await t.closed;
      expect(t.got).toHaveLength(1);
    } finally {
      await t.stop();
    }
  });

  it('a handler that throws: connection closed', async () => {
    const t = await serve(() => Promise.reject(new Error('TPM failed')));
    try {
      t.client.write(Buffer.concat([command(10, 1), command(10, 2)]));
      await t.closed;
      expect(t.got).toHaveLength(1);
    } finally {
      await t.stop();
    }
  });

  it('a handler answering false: no further command is handed over, the connection stays open', async () => {
    let closedEarly = false;
    const t = await serve(async (cmd, s) => {
      s.write(cmd.subarray(6, 10));
      return false;
    });
    void t.closed.then(() => (closedEarly = true));
    try {
      t.client.write(command(10, 1));
      await until(() => t.replies().length === 4);
      t.client.write(command(10, 2));
      await new Promise((r) => setTimeout(r, 50));
      expect(t.got.map((c) => c.readUInt32BE(6))).toEqual([1]);
      expect(closedEarly).toBe(false);
    } finally {
      await t.stop();
    }
  });
});
