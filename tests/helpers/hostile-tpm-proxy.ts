/**
 * A hostile TCP proxy in front of a real TPM (swtpm, or the simulated paravisor's port): it forwards each
 * command (one shared upstream connection, as the paravisor proxy multiplexes) and, for the commands a
 * rule names, loses, mangles, withholds or duplicates the TPM's response AFTER the TPM has executed the
 * command, the way a flaky link or a hostile host would. Counts what it saw per command code.
 */
import * as net from 'node:net';
import { readTpmCommands, SwtpmTcpTransport } from '../../src/tpm';

export type HostileAction =
  /** Response lost: the client's connection is closed instead. */
  | 'drop'
  /** Response made unparseable (its tag mangled), delivered. */
  | 'corrupt'
  /** Response delivered, then a copy of it again, unsolicited, a moment later. */
  | 'inject'
  /** Never answered (the connection stays open). */
  | 'silent'
  /** The previous command's response first (a stray), the real one a moment later. */
  | 'stray-first';

export interface HostileRule {
  cc: number;
  action: HostileAction;
  /** How many matching commands to act on (default 1); later ones pass through. */
  times?: number;
}

export class HostileTpmProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly upstream: SwtpmTcpTransport;
  private rules: (HostileRule & { left: number })[] = [];
  /** Commands seen, by command code. */
  readonly seen = new Map<number, number>();
  /** Rules applied (action per command code). */
  readonly applied: { cc: number; action: HostileAction }[] = [];
  port = 0;
  private last?: Buffer;

  constructor(upstreamPort: number) {
    this.upstream = new SwtpmTcpTransport({ port: upstreamPort });
    this.server = net.createServer((s) => this.serve(s));
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  get endpoint(): string {
    return `tcp:127.0.0.1:${this.port}`;
  }

  add(rule: HostileRule): this {
    this.rules.push({ ...rule, left: rule.times ?? 1 });
    return this;
  }

  /** Rules not yet used up. */
  get pending(): number {
    return this.rules.reduce((n, r) => n + r.left, 0);
  }

  private take(cc: number): HostileAction | undefined {
    const r = this.rules.find((x) => x.cc === cc && x.left > 0);
    if (!r) return undefined;
    r.left--;
    this.applied.push({ cc, action: r.action });
    return r.action;
  }

  private serve(s: net.Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => s.destroy());
    // Answers false (read no further) once the connection is gone or parked.
    readTpmCommands(s, async (cmd) => {
      const cc = cmd.readUInt32BE(6);
      this.seen.set(cc, (this.seen.get(cc) ?? 0) + 1);
      const action = this.take(cc);
      // The TPM always executes the command: what goes wrong is the way back.
      const res = await this.upstream.send(cmd);
      if (s.destroyed) return false;
      if (action === 'drop') {
        s.destroy();
        return false;
      }
      // silent: swallow this and everything after it on this connection.
      if (action === 'silent') return false;
      const previous = this.last;
      this.last = res;
      if (action === 'stray-first' && previous) {
        s.write(previous);
        setTimeout(() => s.destroyed || s.write(res), 20);
        return !s.destroyed;
      }
      if (action === 'corrupt') {
        const bad = Buffer.from(res);
        bad.writeUInt16BE(0xdead, 0);
        s.write(bad);
      } else s.write(res);
      if (action === 'inject') setTimeout(() => s.destroyed || s.write(res), 30);
      return !s.destroyed;
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.upstream.close();
  }
}
