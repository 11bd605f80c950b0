/**
 * A real swtpm per test file: free loopback ports, a temporary state directory, powered on through
 * its control port and started with our own TPM2_Startup. Stopped by PID; the directory is removed.
 * When swtpm is not installed this throws (the test fails, it does not skip), naming the install command.
 */
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SwtpmTcpTransport, TpmClient } from '../../src/tpm';
import { connects, exited, freePort, powerOnAndStartup } from '../../src/cvm/simulator/swtpm-process';

export const SWTPM_INSTALL = 'apt-get install -y swtpm swtpm-tools';

export interface Swtpm {
  port: number;
  ctrlPort: number;
  pid: number;
  stateDir: string;
  /**
   * A client on a fresh connection. swtpm serves one connection at a time (a second one waits until
   * the first closes), so close it (or use `use`) before opening another.
   */
  client(): TpmClient;
  /** Run `fn` with a fresh client and close it afterwards. */
  use<T>(fn: (c: TpmClient) => Promise<T>): Promise<T>;
  /** SIGSTOP / SIGCONT, to freeze the TPM with a command in flight. */
  pause(): void;
  resume(): void;
  /** Kill -9 (the TPM disappears); stop() still cleans up. */
  kill(): Promise<void>;
  /** Restart on the same state and ports: a "VM reboot" (PCRs reset, new NULL seed). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}


async function waitForPort(port: number, child: ChildProcess, deadlineMs = 10_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`swtpm exited with code ${child.exitCode} before listening on ${port}`);
    if (await connects(port)) return;
    if (Date.now() > until) throw new Error(`swtpm did not listen on ${port} within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}


export function swtpmAvailable(): boolean {
  return spawnSync('swtpm', ['--version'], { stdio: 'ignore' }).status === 0;
}

export async function startSwtpm(): Promise<Swtpm> {
  if (!swtpmAvailable()) throw new Error(`swtpm is not installed (the CVM tests need a real software TPM): ${SWTPM_INSTALL}`);
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-swtpm-'));
  const port = await freePort();
  const ctrlPort = await freePort();
  let child: ChildProcess;
  const clients: TpmClient[] = [];

  async function launch(): Promise<void> {
    child = spawn(
      'swtpm',
      [
        'socket',
        '--tpm2',
        '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`,
        '--ctrl', `type=tcp,port=${ctrlPort},bindaddr=127.0.0.1`,
        '--tpmstate', `dir=${stateDir}`,
      ],
      { stdio: 'ignore' },
    );
    await waitForPort(ctrlPort, child);
    await waitForPort(port, child);
    await powerOnAndStartup(port, ctrlPort);
  }

  try {
    await launch();
  } catch (e) {
    fs.rmSync(stateDir, { recursive: true, force: true });
    throw e;
  }

  async function killChild(): Promise<void> {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGCONT');
      process.kill(child.pid, 'SIGKILL');
    }
    await exited(child);
  }

  return {
    port,
    ctrlPort,
    get pid() {
      return child.pid as number;
    },
    stateDir,
    client() {
      const c = new TpmClient(new SwtpmTcpTransport({ port }));
      clients.push(c);
      return c;
    },
    async use(fn) {
      const c = new TpmClient(new SwtpmTcpTransport({ port }));
      try {
        return await fn(c);
      } finally {
        await c.close();
      }
    },
    pause: () => process.kill(child.pid as number, 'SIGSTOP'),
    resume: () => process.kill(child.pid as number, 'SIGCONT'),
    kill: killChild,
    async restart() {
      await Promise.all(clients.splice(0).map((c) => c.close()));
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid as number, 'SIGTERM');
        await exited(child);
      }
      await launch();
    },
    async stop() {
      await Promise.all(clients.splice(0).map((c) => c.close()));
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid as number, 'SIGTERM');
        await exited(child);
      }
      fs.rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
