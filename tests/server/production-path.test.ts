/**
 * Production stays production: what `skr serve` loads (in a fresh process, through the real CLI
 * entry point) contains no emulator module, and the simulator with its test-only keys is loaded
 * only with --simulate.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { provisionSimulatedCvm } from '../../src/cvm/simulator';
import { startSwtpm } from '../helpers/swtpm';

const REPO = path.resolve(__dirname, '..', '..');
const HOOK = path.join(REPO, 'tests', 'hardening', 'ts-hook.js');

/** Run `skr serve <args>` in a child, then list the src/ modules it loaded (relative, `/`-separated). */
function loadedBy(args: string[], dir: string): { code: number; modules: string[]; stderr: string } {
  const script = `
    const { main } = require(${JSON.stringify(path.join(REPO, 'src', 'cli', 'main.ts'))});
    const io = { out: () => undefined, err: () => undefined };
    main(${JSON.stringify(['serve', ...args])}, io).then((code) => {
      const src = ${JSON.stringify(path.join(REPO, 'src') + path.sep)};
      const modules = Object.keys(require.cache).filter((f) => f.startsWith(src)).map((f) => f.slice(src.length).split(require('node:path').sep).join('/'));
      process.stdout.write(JSON.stringify({ code, modules }));
      process.exit(0);
    });`;
  const r = spawnSync(process.execPath, ['-r', HOOK, '-e', script], {
    cwd: dir,
    env: { PATH: process.env.PATH, HOME: dir, LogLevel: 'error' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  const out = JSON.parse(r.stdout || '{}') as { code?: number; modules?: string[] };
  return { code: out.code ?? NaN, modules: out.modules ?? [], stderr: r.stderr };
}

describe('the modules skr serve loads', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-prod-path-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('without --simulate: the whole serve path, no emulator, no simulator', () => {
    // No SEV-SNP device here, so serve stops at detection: after every module of the path is loaded.
    const r = loadedBy(['--port', '0', '--security-context-dir', path.join(dir, 'ctx')], dir);
    expect(r.modules).toEqual(expect.arrayContaining(['cli/commands/serve.ts', 'server/sidecar.ts', 'akv/release.ts', 'akv/vault-release.ts', 'maa/attester.ts', 'akv/jws.ts']));
    expect(r.modules.filter((m) => m.startsWith('emulators/'))).toEqual([]);
    expect(r.modules.filter((m) => m.startsWith('snp/simulator/') || m === 'server/simulation.ts')).toEqual([]);
  }, 90_000);

  it('with --simulate: the simulator is loaded, still no emulator', () => {
    const r = loadedBy(['--simulate', '--port', '0', '--security-context-dir', path.join(dir, 'ctx-sim')], dir);
    expect(r.code).toBe(-1); // serving
    expect(r.modules).toEqual(expect.arrayContaining(['snp/simulator/index.ts', 'server/simulation.ts']));
    expect(r.modules.filter((m) => m.startsWith('emulators/'))).toEqual([]);
  }, 90_000);

  it('on an Azure CVM (--platform azure-cvm, a provisioned swtpm): the CVM parts, no simulator, no emulator', async () => {
    const tpm = await startSwtpm();
    try {
      await tpm.use((c) => provisionSimulatedCvm(c));
      const r = loadedBy(['--platform', 'azure-cvm', '--tpm', `tcp:127.0.0.1:${tpm.port}`, '--port', '0'], dir);
      expect(r.code).toBe(-1); // serving
      expect(r.modules).toEqual(expect.arrayContaining(['server/platform.ts', 'cvm/hcl-evidence-source.ts', 'cvm/guest-attester.ts', 'tpm/client.ts']));
      expect(r.modules.filter((m) => m.startsWith('emulators/'))).toEqual([]);
      expect(r.modules.filter((m) => m.startsWith('snp/simulator/') || m.startsWith('cvm/simulator/') || m === 'server/simulation.ts')).toEqual([]);
    } finally {
      await tpm.stop();
    }
  }, 90_000);

  it('on (simulated) ACI: the CVM evidence and attester are not loaded, only the detection', () => {
    const r = loadedBy(['--simulate', '--port', '0', '--security-context-dir', path.join(dir, 'ctx-aci')], dir);
    expect(r.code).toBe(-1); // serving
    expect(r.modules.filter((m) => m.startsWith('cvm/'))).toEqual(expect.arrayContaining(['cvm/detect.ts']));
    expect(r.modules.filter((m) => m.startsWith('cvm/') && m !== 'cvm/detect.ts' && m !== 'cvm/nv-indices.ts')).toEqual([]);
  }, 90_000);
});
