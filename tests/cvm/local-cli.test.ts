/**
 * `skr local --platform azure-cvm` through the real CLI entry point in a child process: the state file
 * names the platform and the vTPM, the sidecar serves, and SIGTERM stops everything: swtpm ended by PID,
 * its state directory and the state file removed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from '../helpers/cli';
import { startLocalChild } from '../helpers/local-child';
import { swtpmAvailable, SWTPM_INSTALL } from '../helpers/swtpm';

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
    const local = startLocalChild(dir, stateFile, ['--platform', 'azure-cvm', '--port', '0']);
    try {
      const state = await local.readState<State>();
      expect(state.platform).toBe('azure-cvm');
      expect(state.tpm?.endpoint).toMatch(/^tcp:127\.0\.0\.1:\d+$/);
      const pid = state.tpm?.swtpmPid as number;
      expect(() => process.kill(pid, 0)).not.toThrow();
      expect(local.output()).toContain('SIMULATED Azure confidential VM');
      expect(await (await fetch(`${state.sidecarUrl}/status`)).json()).toEqual({ message: 'Status OK', platform: 'azure-cvm', tee: 'sevsnp' });

      local.child.kill('SIGTERM');
      expect(await local.exited).toBe(0);
      expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
      expect(fs.existsSync(state.tpm?.swtpmStateDir as string)).toBe(false);
      expect(fs.existsSync(stateFile)).toBe(false);
    } finally {
      await local.killIfRunning();
    }
  }, 120_000);
});
