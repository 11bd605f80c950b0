/**
 * Graceful shutdown of `skr serve` as a real child process: SIGTERM while a request is in flight
 * (an /attest/maa that MAA answers 429 + Retry-After: 1 first) → new connections are refused, the
 * in-flight request still gets its 200, and the process exits 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { SimulatedPlatform, TEST_ONLY_UVM_ROOT_SHA256 } from '../../src/snp/simulator';

const REPO = path.resolve(__dirname, '..', '..');

async function until<T>(what: string, f: () => T | undefined, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A child a failed test left running is killed, and waited for: a live child keeps the jest worker from exiting. */
async function killAndWait(c: ChildProcess | undefined): Promise<void> {
  if (!c || c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await exited;
}

describe('skr serve: SIGTERM', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-shutdown-'));
  const ca = loadOrCreateLocalCa(dir);
  let maa: MaaEmulator;
  let child: ChildProcess | undefined;

  afterAll(async () => {
    await killAndWait(child);
    await maa?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('stops accepting, finishes the request in flight, exits 0', async () => {
    // The simulated platform's chain is deterministic, so a fresh instance yields the same test ARK.
    const platform = new SimulatedPlatform();
    maa = await startMaaEmulator({ ca, trustedArkPem: [platform.arkPem], trustedUvmRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256] });
    const env = { PATH: process.env.PATH, HOME: dir, SKR_ALLOWED_MAA: maa.endpoint, SKR_EXTRA_CA_FILE: ca.certPath, LogLevel: 'warning' };
    child = spawn(process.execPath, ['-r', path.join(__dirname, 'ts-hook.js'), path.join(REPO, 'src', 'cli', 'main.ts'), 'serve', '--simulate', '--port', '0', '--security-context-dir', path.join(dir, 'ctx')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child!.on('exit', (code) => r(code)));
    // Generous: the child transpiles the sources on start, which is slow on a loaded machine.
    const url = await until('sidecar ready', () => /sidecar ready at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1], 60_000);

    maa.faults.inject({ route: 'attest', kind: 'status', status: 429, retryAfterSeconds: 1 });
    const inFlight = fetch(`${url}/attest/maa`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ maa_endpoint: maa.endpoint, runtime_data: Buffer.from('{}').toString('base64') }),
    });
    // The request is now waiting out MAA's Retry-After inside the sidecar.
    await until('MAA fault served', () => (maa.faults.served['attest:status'] ? true : undefined));
    child.kill('SIGTERM');
    await until('shutdown log line', () => (out.includes('SIGTERM received') ? true : undefined));

    await expect(fetch(`${url}/status`)).rejects.toMatchObject({ message: 'fetch failed', cause: { code: 'ECONNREFUSED' } });
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(((await res.json()) as { token: string }).token.split('.')).toHaveLength(3);
    expect(await exited).toBe(0);
  }, 90_000);
});

describe('skr serve --simulate: its temporary security-context directory goes with the process', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-serve-tmp-'));
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const c of children) await killAndWait(c);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** `skr serve --simulate` with its own TMPDIR, so what it leaves there is visible. */
  function serve(tmpdir: string, port = '0') {
    fs.mkdirSync(tmpdir);
    const env = { PATH: process.env.PATH, HOME: dir, TMPDIR: tmpdir, LogLevel: 'warning' };
    const c = spawn(process.execPath, ['-r', path.join(__dirname, 'ts-hook.js'), path.join(REPO, 'src', 'cli', 'main.ts'), 'serve', '--simulate', '--port', port], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(c);
    let out = '';
    c.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => c.on('exit', (code) => r(code)));
    return { child: c, output: () => out, exited };
  }

  it.each(['SIGTERM', 'SIGINT'] as const)('removed after %s', async (signal) => {
    const tmpdir = path.join(dir, signal);
    const p = serve(tmpdir);
    // Generous: the child transpiles the sources on start, which is slow on a loaded machine.
    await until('sidecar ready', () => (/sidecar ready at/.test(p.output()) ? true : undefined), 60_000);
    expect(fs.readdirSync(tmpdir)).toEqual([expect.stringMatching(/^skr-security-context-/)]);
    p.child.kill(signal);
    expect(await p.exited).toBe(0);
    expect(fs.readdirSync(tmpdir)).toEqual([]);
  }, 90_000);

  it('removed when the start fails (port in use)', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    try {
      const tmpdir = path.join(dir, 'busy');
      const p = serve(tmpdir, String((busy.address() as net.AddressInfo).port));
      expect(await p.exited).toBe(1);
      expect(p.output()).toMatch(/cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
      expect(fs.readdirSync(tmpdir)).toEqual([]);
    } finally {
      await new Promise((r) => busy.close(r));
    }
  }, 90_000);
});

/**
 * A supervisor may stop the process the moment it reads the ready line (or, for `skr local`, the
 * summary after the state file): the SIGTERM/SIGINT handlers must already be in place by then, or the
 * signal's default action kills the process without the graceful shutdown. Checked deterministically:
 * a child runs the command with an `io` that, at that line, reports how many handlers are installed.
 */
describe('the ready announcement comes after the signal handlers', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-ready-order-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  function runAtAnnouncement(command: 'serve' | 'local', args: string[], announces: string): Promise<string> {
    // The compiled CLI (jest's globalSetup rebuilds dist/): the check runs in the child's own process.
    const script = `
      const { ${command}Command } = require(${JSON.stringify(path.join(REPO, 'dist', 'cli', 'commands', `${command}.js`))});
      const at = (line) => {
        if (!line.includes(${JSON.stringify(announces)})) return;
        process.stdout.write('handlers SIGTERM=' + process.listenerCount('SIGTERM') + ' SIGINT=' + process.listenerCount('SIGINT') + '\\n');
        process.exit(0);
      };
      ${command}Command(${JSON.stringify(args)}, { out: at, err: at }).catch((e) => { process.stdout.write('failed: ' + e.message + '\\n'); process.exit(1); });
    `;
    const c = spawn(process.execPath, ['-e', script], { env: { PATH: process.env.PATH, HOME: dir, TMPDIR: dir }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    // Only the check's own line (or its failure): the sidecar's log lines share these streams.
    return new Promise((resolve) => c.on('exit', () => resolve(out.split('\n').filter((l) => /^(handlers|failed:) /.test(l)).join('\n') || out.slice(-2000))));
  }

  it('skr serve: at "sidecar ready at"', async () => {
    expect(await runAtAnnouncement('serve', ['--simulate', '--port', '0'], 'sidecar ready at')).toBe('handlers SIGTERM=1 SIGINT=1');
  }, 90_000);

  it('skr local: at the summary printed once the state file is written', async () => {
    const stateDir = path.join(dir, 'local');
    const out = await runAtAnnouncement('local', ['--port', '0', '--state-dir', stateDir], 'stack ready on');
    expect(out).toBe('handlers SIGTERM=1 SIGINT=1');
    expect(fs.existsSync(path.join(stateDir, 'state.json'))).toBe(true);
  }, 90_000);
});
