/**
 * LOCAL DEVELOPMENT ONLY (`skr local --platform azure-cvm`): a swtpm child process on free loopback ports
 * with a temporary state directory, powered on through its control port and started with our own
 * TPM2_Startup. stop() ends it by PID and removes the directory. swtpm serves one TCP connection at a
 * time: the caller keeps one connection (the paravisor proxy's) and multiplexes over it.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { DeviceError } from '../../common/errors';
import { SwtpmTcpTransport, swtpmPowerOn, TpmClient } from '../../tpm';

export const SWTPM_INSTALL_COMMAND = 'apt-get install -y swtpm swtpm-tools';
const START_TIMEOUT_MS = 10_000;

export interface SwtpmProcess {
  port: number;
  ctrlPort: number;
  pid: number;
  stateDir: string;
  /** SIGTERM by PID (SIGKILL after a grace period), then the state directory is removed. Idempotent. */
  stop(): Promise<void>;
}

/** A free loopback port (shared with the tests' swtpm helper). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Power a fresh (or reset) swtpm on through its control port, then TPM2_Startup(CLEAR) on its command port. */
export async function powerOnAndStartup(port: number, ctrlPort: number): Promise<void> {
  await swtpmPowerOn({ port: ctrlPort });
  const c = new TpmClient(new SwtpmTcpTransport({ port }));
  try {
    await c.startup();
  } finally {
    await c.close();
  }
}

/** Start swtpm; a missing binary is a DeviceError naming the install command. */
export async function startSwtpmProcess(opts: { binary?: string } = {}): Promise<SwtpmProcess> {
  const binary = opts.binary ?? 'swtpm';
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-local-swtpm-'));
  const port = await freePort();
  const ctrlPort = await freePort();
  const child = spawn(
    binary,
    ['socket', '--tpm2', '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`, '--ctrl', `type=tcp,port=${ctrlPort},bindaddr=127.0.0.1`, '--tpmstate', `dir=${stateDir}`],
    { stdio: 'ignore' },
  );
  let spawnError: NodeJS.ErrnoException | undefined;
  child.once('error', (e: NodeJS.ErrnoException) => {
    spawnError = e;
  });
  let stopped = false;
  // Should the process end without stop() (an uncaught error, process.exit), swtpm does not outlive it.
  const onExit = (): void => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
    fs.rmSync(stateDir, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.off('exit', onExit);
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, 'SIGTERM');
      const grace = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      }, 3_000);
      await exited(child);
      clearTimeout(grace);
    }
    fs.rmSync(stateDir, { recursive: true, force: true });
  };
  try {
    const until = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (spawnError) {
        throw new DeviceError(
          'ERR_DEVICE',
          spawnError.code === 'ENOENT'
            ? `swtpm is not installed (the simulated Azure confidential VM needs a software TPM): ${SWTPM_INSTALL_COMMAND}`
            : `cannot start swtpm: ${spawnError.code ?? spawnError.message}`,
          { ...(spawnError.code ? { errno: spawnError.code } : {}), cause: spawnError },
        );
      }
      if (child.exitCode !== null) throw new DeviceError('ERR_DEVICE', `swtpm exited with code ${child.exitCode} before listening on 127.0.0.1:${port}`);
      if ((await connects(ctrlPort)) && (await connects(port))) break;
      if (Date.now() > until) throw new DeviceError('ERR_DEVICE', `swtpm did not listen on 127.0.0.1:${port} within ${START_TIMEOUT_MS} ms`);
      await new Promise((r) => setTimeout(r, 25));
    }
    await powerOnAndStartup(port, ctrlPort);
  } catch (e) {
    await stop();
    throw e;
  }
  return { port, ctrlPort, pid: child.pid as number, stateDir, stop };
}
