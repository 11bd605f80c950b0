/**
 * Transports carry one whole command and bring back one whole response. Both serialise: a TPM (and
 * the kernel resource manager's view of one open file) handles one command at a time, so a second
 * caller waits for the first answer instead of interleaving bytes.
 *
 *  - DeviceTransport: `/dev/tpmrm0` (the kernel resource manager; flushes our transient handles when
 *    the file is closed). One write = one command, one read = one response.
 *  - SwtpmTcpTransport: swtpm's TCP server port, which takes the same raw bytes (no mssim framing).
 *
 * Responses are bounded (MAX_RESPONSE_BYTES) and checked against their own size header.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { TpmTransportError } from './errors';

/** Far above any TPM's TPM_PT_MAX_RESPONSE_SIZE (4096 on swtpm and Azure's vTPM). */
export const MAX_RESPONSE_BYTES = 8192;
export const HEADER_BYTES = 10;
export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

export interface TpmTransport {
  /** Human-readable, for errors: `/dev/tpmrm0`, `swtpm 127.0.0.1:2321`. */
  readonly description: string;
  /** Send one command, resolve with its complete response (header included). */
  send(command: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

/** One-at-a-time queue. */
export class Serializer {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

function checkResponseHeader(b: Buffer, where: string): number {
  const size = b.readUInt32BE(2);
  if (size < HEADER_BYTES || size > MAX_RESPONSE_BYTES) {
    throw new TpmTransportError(`${where}: response declares ${size} bytes (allowed ${HEADER_BYTES}..${MAX_RESPONSE_BYTES})`);
  }
  return size;
}

export class DeviceTransport implements TpmTransport {
  readonly description: string;
  private fh?: fs.promises.FileHandle;
  private readonly queue = new Serializer();

  constructor(readonly path = '/dev/tpmrm0') {
    this.description = path;
  }

  private async handle(): Promise<fs.promises.FileHandle> {
    if (!this.fh) {
      try {
        this.fh = await fs.promises.open(this.path, 'r+');
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const why = err.code === 'EACCES' ? ' (needs root or the tss group)' : err.code === 'ENOENT' ? ' (no TPM device: not a confidential VM, or the device is not passed to the container)' : '';
        throw new TpmTransportError(`cannot open ${this.path}: ${err.code ?? err.message}${why}`, { ...(err.code ? { errno: err.code } : {}), cause: e });
      }
    }
    return this.fh;
  }

  send(command: Buffer): Promise<Buffer> {
    return this.queue.run(async () => {
      const fh = await this.handle();
      try {
        await fh.write(command, 0, command.length, null);
        const buf = Buffer.alloc(MAX_RESPONSE_BYTES);
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead < HEADER_BYTES) throw new TpmTransportError(`${this.path}: short response (${bytesRead} bytes)`);
        const size = checkResponseHeader(buf, this.path);
        if (size !== bytesRead) throw new TpmTransportError(`${this.path}: response declares ${size} bytes but ${bytesRead} arrived`);
        return Buffer.from(buf.subarray(0, bytesRead));
      } catch (e) {
        if (e instanceof TpmTransportError) throw e;
        const err = e as NodeJS.ErrnoException;
        throw new TpmTransportError(`${this.path}: ${err.code ?? err.message}`, { ...(err.code ? { errno: err.code } : {}), cause: e });
      }
    });
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }
}

export interface TcpTransportOptions {
  host?: string;
  port: number;
  /** Per command, connect included. Default 30 s (RSA key generation on a slow vTPM). */
  timeoutMs?: number;
}

/** swtpm's TCP command port. The connection is opened on first use and kept. */
export class SwtpmTcpTransport implements TpmTransport {
  readonly description: string;
  private readonly host: string;
  private readonly port: number;
  private readonly timeoutMs: number;
  private socket?: net.Socket;
  private readonly queue = new Serializer();

  constructor(opts: TcpTransportOptions) {
    this.host = opts.host ?? '127.0.0.1';
    this.port = opts.port;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.description = `swtpm ${this.host}:${this.port}`;
  }

  private connect(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: this.host, port: this.port });
      const onError = (e: NodeJS.ErrnoException) => {
        s.destroy();
        reject(new TpmTransportError(`cannot connect to ${this.description}: ${e.code ?? e.message}`, { ...(e.code ? { errno: e.code } : {}), cause: e }));
      };
      s.once('error', onError);
      s.once('connect', () => {
        s.off('error', onError);
        // Errors outside a command (peer reset while idle) must not crash the process; the next send sees a destroyed socket.
        s.on('error', () => undefined);
        s.setNoDelay(true);
        this.socket = s;
        resolve(s);
      });
    });
  }

  send(command: Buffer): Promise<Buffer> {
    return this.queue.run(async () => {
      const s = await this.connect();
      return new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        let have = 0;
        let expected = -1;
        const done = (err: Error | undefined, out?: Buffer) => {
          clearTimeout(timer);
          s.off('data', onData);
          s.off('close', onClose);
          s.off('error', onErr);
          if (err) {
            // A half-read response would desynchronise every later command: drop the connection.
            s.destroy();
            this.socket = undefined;
            reject(err);
          } else resolve(out as Buffer);
        };
        const onData = (d: Buffer) => {
          chunks.push(d);
          have += d.length;
          if (have > MAX_RESPONSE_BYTES) return done(new TpmTransportError(`${this.description}: response exceeds ${MAX_RESPONSE_BYTES} bytes`));
          if (expected < 0 && have >= HEADER_BYTES) {
            try {
              expected = checkResponseHeader(Buffer.concat(chunks), this.description);
            } catch (e) {
              return done(e as Error);
            }
          }
          if (expected >= 0 && have >= expected) {
            const all = Buffer.concat(chunks);
            if (have > expected) return done(new TpmTransportError(`${this.description}: ${have - expected} bytes beyond the declared response size`));
            done(undefined, all);
          }
        };
        const onClose = () => done(new TpmTransportError(`${this.description}: connection closed before the response was complete (${have} bytes received): the TPM went away`));
        const onErr = (e: NodeJS.ErrnoException) => done(new TpmTransportError(`${this.description}: ${e.code ?? e.message}`, { ...(e.code ? { errno: e.code } : {}), cause: e }));
        const timer = setTimeout(() => done(new TpmTransportError(`${this.description}: no response within ${this.timeoutMs} ms`)), this.timeoutMs);
        s.on('data', onData);
        s.once('close', onClose);
        s.once('error', onErr);
        s.write(command);
      });
    });
  }

  async close(): Promise<void> {
    const s = this.socket;
    this.socket = undefined;
    if (!s || s.destroyed) return;
    await new Promise<void>((resolve) => {
      s.once('close', () => resolve());
      s.end();
      setTimeout(() => s.destroy(), 1000).unref();
    });
  }
}

/** swtpm control channel commands (swtpm's ptm interface, `--ctrl type=tcp`). */
export const SWTPM_CTRL = { INIT: 2, SHUTDOWN: 3, STOP: 14 } as const;

/**
 * swtpm's control port: power-on (CMD_INIT), which a TPM started without `not-need-init` requires
 * before its first command, and which also models a platform reset (a "VM reboot": PCRs cleared, a new
 * NULL seed once TPM2_Startup(CLEAR) follows).
 */
export async function swtpmControl(opts: { host?: string; port: number; timeoutMs?: number }, cmd: number, payload: Buffer = Buffer.alloc(0)): Promise<number> {
  const host = opts.host ?? '127.0.0.1';
  const req = Buffer.alloc(4 + payload.length);
  req.writeUInt32BE(cmd);
  payload.copy(req, 4);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port: opts.port });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => finish(new TpmTransportError(`swtpm control ${host}:${opts.port}: no answer within ${opts.timeoutMs ?? 10_000} ms`)), opts.timeoutMs ?? 10_000);
    const finish = (err?: Error, rc?: number) => {
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(rc as number);
    };
    s.once('error', (e: NodeJS.ErrnoException) => finish(new TpmTransportError(`swtpm control ${host}:${opts.port}: ${e.code ?? e.message}`, { cause: e })));
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      const all = Buffer.concat(chunks);
      if (all.length >= 4) finish(undefined, all.readUInt32BE(0));
    });
    s.once('close', () => finish(new TpmTransportError(`swtpm control ${host}:${opts.port}: closed without an answer`)));
    s.once('connect', () => s.write(req));
  });
}

/** Power the swtpm on (or reset it): CMD_INIT with no flags. Throws on a non-zero result. */
export async function swtpmPowerOn(opts: { host?: string; port: number }): Promise<void> {
  const rc = await swtpmControl(opts, SWTPM_CTRL.INIT, Buffer.alloc(4));
  if (rc !== 0) throw new TpmTransportError(`swtpm control CMD_INIT failed with result 0x${rc.toString(16)}`);
}
