/** The swtpm child process of `skr local --platform azure-cvm`: started, usable, stopped by PID, state removed. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startSwtpmProcess, SWTPM_INSTALL_COMMAND } from '../../src/cvm/simulator';
import { SwtpmTcpTransport, TpmClient } from '../../src/tpm';
import { swtpmAvailable, SWTPM_INSTALL } from '../helpers/swtpm';

describe('startSwtpmProcess', () => {
  it('starts a powered-on swtpm and stops it by PID, removing its state directory', async () => {
    if (!swtpmAvailable()) throw new Error(`swtpm is not installed: ${SWTPM_INSTALL}`);
    const p = await startSwtpmProcess();
    try {
      expect(() => process.kill(p.pid, 0)).not.toThrow();
      expect(fs.existsSync(p.stateDir)).toBe(true);
      const c = new TpmClient(new SwtpmTcpTransport({ port: p.port }));
      try {
        // Started already (our TPM2_Startup): PCR_Read answers.
        const pcrs = await c.pcrRead(0x000b, [0]);
        expect(pcrs.get(0)?.length).toBe(32);
      } finally {
        await c.close();
      }
    } finally {
      await p.stop();
    }
    expect(() => process.kill(p.pid, 0)).toThrow(/ESRCH/);
    expect(fs.existsSync(p.stateDir)).toBe(false);
    await p.stop(); // idempotent
  }, 30_000);

  it('does not outlive a process that exits without stopping it', async () => {
    if (!swtpmAvailable()) throw new Error(`swtpm is not installed: ${SWTPM_INSTALL}`);
    const repo = path.resolve(__dirname, '..', '..');
    const script = `require(${JSON.stringify(path.join(repo, 'src', 'cvm', 'simulator', 'swtpm-process.ts'))}).startSwtpmProcess().then((p) => { process.stdout.write(JSON.stringify({ pid: p.pid, dir: p.stateDir })); process.exit(3); });`;
    const r = spawnSync(process.execPath, ['-r', path.join(repo, 'tests', 'hardening', 'ts-hook.js'), '-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(3);
    const { pid, dir } = JSON.parse(r.stdout) as { pid: number; dir: string };
    expect(fs.existsSync(dir)).toBe(false);
    // SIGKILLed at exit: gone, or a zombie until whatever reaps orphans here does (bounded wait).
    const running = (): boolean => {
      try {
        return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
      } catch {
        return false;
      }
    };
    let alive = running();
    for (let i = 0; i < 100 && alive; i++) {
      await new Promise((res) => setTimeout(res, 50));
      alive = running();
    }
    expect(alive).toBe(false);
  }, 40_000);

  it('names the install command when swtpm is absent, and leaves no state behind', async () => {
    const before = new Set(fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('skr-local-swtpm-')));
    await expect(startSwtpmProcess({ binary: 'skr-test-no-such-swtpm' })).rejects.toThrow(`swtpm is not installed (the simulated Azure confidential VM needs a software TPM): ${SWTPM_INSTALL_COMMAND}`);
    const after = fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('skr-local-swtpm-') && !before.has(d));
    expect(after).toEqual([]);
  });
});
