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
  /**
   * Drop the connection (or device file) so the next command starts on a fresh one: after a response
   * that did not parse, bytes still in flight would answer the wrong command.
   */
  reset?(): Promise<void>;
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

export interface DeviceTransportOptions {
  /** Per command, write and read. Default 30 s, as over TCP. */
  timeoutMs?: number;
}

const fsOpen = (p: string, flags: number) => new Promise<number>((res, rej) => fs.open(p, flags, (e, fd) => (e ? rej(e) : res(fd))));
const fsWrite = (fd: number, b: Buffer, off: number) => new Promise<number>((res, rej) => fs.write(fd, b, off, b.length - off, null, (e, n) => (e ? rej(e) : res(n))));
const fsRead = (fd: number, b: Buffer, off: number) => new Promise<number>((res, rej) => fs.read(fd, b, off, b.length - off, null, (e, n) => (e ? rej(e) : res(n))));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Nothing to read yet on a non-blocking file (EAGAIN), or a read that found no response (0 bytes). */
function notYet(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'EAGAIN' || code === 'EWOULDBLOCK';
}

/**
 * The kernel's TPM device, opened non-blocking so that no command can hold the process (or the
 * sidecar's device gate) forever: the response is polled for until the deadline. With the kernel's
 * asynchronous mode (O_NONBLOCK, Linux ≥ 4.20) the write queues the command and the read waits for it
 * inside the kernel, bounded by the driver's own timeouts; older kernels run it in the write. A command
 * past its deadline abandons the open file (closed once any read or write still running on it returns:
 * its descriptor number must not be reused under it) and the next command opens the device afresh.
 */
export class DeviceTransport implements TpmTransport {
  readonly description: string;
  readonly timeoutMs: number;
  private fd?: number;
  /** The operation of an abandoned file that has not returned yet. */
  private stuck?: Promise<unknown>;
  private readonly queue = new Serializer();

  constructor(
    readonly path = '/dev/tpmrm0',
    opts: DeviceTransportOptions = {},
  ) {
    this.description = path;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  }

  private async open(): Promise<number> {
    if (this.fd === undefined) {
      const { O_RDWR, O_NONBLOCK, O_NOCTTY } = fs.constants;
      try {
        this.fd = await fsOpen(this.path, O_RDWR | O_NONBLOCK | O_NOCTTY);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const why = err.code === 'EACCES' ? ' (needs root or the tss group)' : err.code === 'ENOENT' ? ' (no TPM device: not a confidential VM, or the device is not passed to the container)' : '';
        throw new TpmTransportError(`cannot open ${this.path}: ${err.code ?? err.message}${why}`, { ...(err.code ? { errno: err.code } : {}), cause: e });
      }
    }
    return this.fd;
  }

  /**
   * Give up the open file: closed once `pending` (an operation still using it) settles. Until then no
   * other command is sent: a read the kernel still blocks (a hung vTPM) holds a libuv thread, and a
   * second, third… would take the whole pool (and every fs and crypto call of the process) with them.
   */
  private abandon(pending?: Promise<unknown>): void {
    const fd = this.fd;
    this.fd = undefined;
    if (fd === undefined) return;
    const close = () => fs.close(fd, () => undefined);
    if (pending) {
      const settled = pending.then(close, close).finally(() => {
        if (this.stuck === settled) this.stuck = undefined;
      });
      this.stuck = settled;
    } else close();
  }

  send(command: Buffer): Promise<Buffer> {
    return this.queue.run(async () => {
      const deadline = Date.now() + this.timeoutMs;
      let pending: Promise<unknown> | undefined;
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new TpmTransportError(`${this.path}: no response within ${this.timeoutMs} ms: the TPM is not answering (the device is reopened for the next command)`, { errno: 'ETIMEDOUT' })),
          this.timeoutMs,
        );
      });
      expired.catch(() => undefined);
      // The one buffer the response is read into (the caller may wipe it).
      const buf = Buffer.alloc(MAX_RESPONSE_BYTES);
      let fd: number;
      try {
        // A command that timed out and has not returned yet is waited for (within this deadline), not joined by another.
        if (this.stuck) await Promise.race([this.stuck, expired]);
        fd = await this.open();
      } catch (e) {
        clearTimeout(timer);
        throw e;
      }
      /** One read or write, given up at the deadline (the file is then abandoned, not closed under it). */
      const step = <T>(p: Promise<T>): Promise<T> => {
        pending = p;
        return Promise.race([p, expired]);
      };
      try {
        for (let off = 0; off < command.length; ) {
          try {
            off += await step(fsWrite(fd, command, off));
          } catch (e) {
            if (!notYet(e)) throw e;
            await step(sleep(1));
          }
        }
        pending = undefined;
        let have = 0;
        let wait = 1;
        for (;;) {
          let n = 0;
          try {
            n = await step(fsRead(fd, buf, have));
          } catch (e) {
            if (!notYet(e)) throw e;
          }
          pending = undefined;
          if (n === 0) {
            if (Date.now() > deadline) await expired;
            await step(sleep(wait));
            wait = Math.min(wait * 2, 20);
            continue;
          }
          have += n;
          if (have < HEADER_BYTES) continue;
          const size = checkResponseHeader(buf, this.path);
          if (have > size) throw new TpmTransportError(`${this.path}: response declares ${size} bytes but ${have} arrived`);
          // A view of the one buffer the response was read into (the caller may wipe it).
          if (have === size) return buf.subarray(0, have);
        }
      } catch (e) {
        // Whatever went wrong, the next command must not read what is left of this one.
        buf.fill(0);
        // A read still running may yet fill it: wiped again once it returns.
        pending?.then(() => buf.fill(0), () => buf.fill(0));
        this.abandon(pending);
        if (e instanceof TpmTransportError) throw e;
        const err = e as NodeJS.ErrnoException;
        throw new TpmTransportError(`${this.path}: ${err.code ?? err.message}`, { ...(err.code ? { errno: err.code } : {}), cause: e });
      } finally {
        clearTimeout(timer);
      }
    });
  }

  reset(): Promise<void> {
    return this.queue.run(async () => this.abandon());
  }

  async close(): Promise<void> {
    this.abandon();
  }
}

export interface TcpTransportOptions {
  host?: string;
  port: number;
  /** Per command, connect included. Default 30 s (RSA key generation on a slow vTPM). */
  timeoutMs?: number;
}

/**
 * swtpm's TCP command port. The connection is opened on first use and kept. Bytes that arrive while no
 * command is in flight (a stray or duplicated response) would answer the next command: the connection
 * is dropped instead, and so is it after any framing error (and on reset(), after a response that did
 * not parse), so later commands are always in step.
 */
export class SwtpmTcpTransport implements TpmTransport {
  readonly description: string;
  private readonly host: string;
  private readonly port: number;
  private readonly timeoutMs: number;
  private socket?: net.Socket;
  /** The in-flight command's data handler; none while idle. */
  private onData?: (d: Buffer) => void;
  private readonly queue = new Serializer();

  constructor(opts: TcpTransportOptions) {
    this.host = opts.host ?? '127.0.0.1';
    this.port = opts.port;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.description = `swtpm ${this.host}:${this.port}`;
  }

  private drop(s: net.Socket): void {
    s.destroy();
    if (this.socket === s) this.socket = undefined;
  }

  private connect(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    return new Promise((resolve, reject) => {
      // Node reads straight into this buffer (no per-read allocation): each read is copied into the
      // command's response buffer and wiped here, so a decrypted key leaves no copy in socket chunks.
      const readBuf = Buffer.alloc(MAX_RESPONSE_BYTES + 1);
      const ref: { s?: net.Socket } = {};
      const onread = {
        buffer: readBuf,
        callback: (n: number, b: Buffer): boolean => {
          const d = b.subarray(0, n);
          if (this.onData) this.onData(d);
          // Unsolicited: this connection is out of step with our commands.
          else if (ref.s) this.drop(ref.s);
          d.fill(0);
          return true;
        },
      };
      const sock = net.connect({ host: this.host, port: this.port, onread });
      ref.s = sock;
      const onError = (e: NodeJS.ErrnoException) => {
        sock.destroy();
        reject(new TpmTransportError(`cannot connect to ${this.description}: ${e.code ?? e.message}`, { ...(e.code ? { errno: e.code } : {}), cause: e }));
      };
      sock.once('error', onError);
      sock.once('connect', () => {
        sock.off('error', onError);
        // Errors outside a command (peer reset while idle) must not crash the process; the next send sees a destroyed socket.
        sock.on('error', () => undefined);
        sock.setNoDelay(true);
        this.socket = sock;
        resolve(sock);
      });
    });
  }

  send(command: Buffer): Promise<Buffer> {
    return this.queue.run(async () => {
      const s = await this.connect();
      return new Promise<Buffer>((resolve, reject) => {
        // One buffer per response, the only copy of it in this process; the caller may wipe it.
        const resp = Buffer.alloc(MAX_RESPONSE_BYTES);
        let have = 0;
        let expected = -1;
        const done = (err: Error | undefined, out?: Buffer) => {
          clearTimeout(timer);
          this.onData = undefined;
          s.off('close', onClose);
          s.off('error', onErr);
          if (err) {
            resp.fill(0);
            // A half-read response would desynchronise every later command: drop the connection.
            this.drop(s);
            reject(err);
          } else resolve(out as Buffer);
        };
        const onData = (d: Buffer) => {
          if (have + d.length > MAX_RESPONSE_BYTES) return done(new TpmTransportError(`${this.description}: response exceeds ${MAX_RESPONSE_BYTES} bytes`));
          d.copy(resp, have);
          have += d.length;
          if (expected < 0 && have >= HEADER_BYTES) {
            try {
              expected = checkResponseHeader(resp, this.description);
            } catch (e) {
              return done(e as Error);
            }
          }
          if (expected >= 0 && have >= expected) {
            if (have > expected) return done(new TpmTransportError(`${this.description}: ${have - expected} bytes beyond the declared response size`));
            done(undefined, resp.subarray(0, have));
          }
        };
        const onClose = () => done(new TpmTransportError(`${this.description}: connection closed before the response was complete (${have} bytes received): the TPM went away`));
        const onErr = (e: NodeJS.ErrnoException) => done(new TpmTransportError(`${this.description}: ${e.code ?? e.message}`, { ...(e.code ? { errno: e.code } : {}), cause: e }));
        const timer = setTimeout(() => done(new TpmTransportError(`${this.description}: no response within ${this.timeoutMs} ms`, { errno: 'ETIMEDOUT' })), this.timeoutMs);
        this.onData = onData;
        s.once('close', onClose);
        s.once('error', onErr);
        s.write(command);
      });
    });
  }

  reset(): Promise<void> {
    return this.queue.run(async () => {
      if (this.socket) this.drop(this.socket);
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
