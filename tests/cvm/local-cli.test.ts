/**
 * `skr local --platform azure-cvm` through the real CLI entry point in a child process: the state file
 * names the platform and the vTPM, the sidecar serves, and SIGTERM stops everything: swtpm ended by PID,
 * its state directory and the state file removed.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from '../helpers/cli';
import { swtpmAvailable, SWTPM_INSTALL } from '../helpers/swtpm';

const REPO = path.resolve(__dirname, '..', '..');
const HOOK = path.join(REPO, 'tests', 'hardening', 'ts-hook.js');

interface State {
  platform: string;
  sidecarUrl: string;
  tpm?: { endpoint: string; swtpmPid: number; swtpmStateDir: string };
}

describe('skr local --platform azure-cvm (CLI, child process)', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-local-cvm-cli-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('refuses an unknown platform as a usage error', async () => {
    const r = await runCli('local', '--platform', 'tdx', '--state-dir', dir);
    expect(r.code).toBe(2);
    expect(r.err).toContain('--platform "tdx" is not aci or azure-cvm');
  });

  it('skr demo refuses an unknown --platform as a usage error', async () => {
    const r = await runCli('demo', '--platform', 'tdx', '--state-file', path.join(dir, 'none.json'));
    expect(r.code).toBe(2);
    expect(r.err).toContain('--platform "tdx" is not aci or azure-cvm');
  });

  it('writes the platform to its state file, serves, and stops swtpm by PID on SIGTERM', async () => {
    if (!swtpmAvailable()) throw new Error(`swtpm is not installed: ${SWTPM_INSTALL}`);
    const stateFile = path.join(dir, 'state.json');
    const script = `require(${JSON.stringify(path.join(REPO, 'src', 'cli', 'main.ts'))}).main(process.argv.slice(1)).then((c) => { if (c !== -1) process.exit(c); });`;
    const child = spawn(process.execPath, ['-r', HOOK, '-e', script, 'local', '--platform', 'azure-cvm', '--port', '0', '--state-dir', dir, '--state-file', stateFile, '--log-level', 'error'], {
      cwd: dir,
      env: { PATH: process.env.PATH, HOME: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      let state: State | undefined;
      for (let i = 0; i < 900 && !state && child.exitCode === null; i++) {
        await new Promise((r) => setTimeout(r, 100));
        try {
          state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as State;
        } catch {
          state = undefined;
        }
      }
      if (!state) throw new Error(`skr local did not write its state file:\n${out}`);
      expect(state.platform).toBe('azure-cvm');
      expect(state.tpm?.endpoint).toMatch(/^tcp:127\.0\.0\.1:\d+$/);
      const pid = state.tpm?.swtpmPid as number;
      expect(() => process.kill(pid, 0)).not.toThrow();
      expect(out).toContain('SIMULATED Azure confidential VM');
      expect(await (await fetch(`${state.sidecarUrl}/status`)).json()).toEqual({ message: 'Status OK', platform: 'azure-cvm', tee: 'sevsnp' });

      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
      expect(fs.existsSync(state.tpm?.swtpmStateDir as string)).toBe(false);
      expect(fs.existsSync(stateFile)).toBe(false);
    } finally {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
  }, 120_000);
});
