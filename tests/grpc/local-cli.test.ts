/**
 * `skr local --grpc-port 0` through the real CLI entry point in a child process: the state file names
 * the gRPC key provider (grpcTarget), a gRPC client is answered there, and `skr demo` (in this process,
 * against that stack) shows an UnWrapKey giving the layer options back. SIGTERM stops it all.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from '../helpers/cli';
import { call } from '../helpers/grpc';

const REPO = path.resolve(__dirname, '..', '..');
const HOOK = path.join(REPO, 'tests', 'hardening', 'ts-hook.js');

describe('skr local --grpc-port (CLI, child process) and skr demo', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-local-grpc-cli-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('refuses a --grpc-port that is not a port', async () => {
    const r = await runCli('local', '--grpc-port', 'fifty', '--state-dir', dir);
    expect(r.code).toBe(2);
    expect(r.err).toContain('port "fifty" is not a number from 0 to 65535');
  });

  it('writes grpcTarget to the state file, serves gRPC there, and skr demo shows an UnWrapKey', async () => {
    const stateFile = path.join(dir, 'state.json');
    const script = `require(${JSON.stringify(path.join(REPO, 'src', 'cli', 'main.ts'))}).main(process.argv.slice(1)).then((c) => { if (c !== -1) process.exit(c); });`;
    const child = spawn(process.execPath, ['-r', HOOK, '-e', script, 'local', '--port', '0', '--grpc-port', '0', '--state-dir', dir, '--state-file', stateFile, '--log-level', 'error'], {
      cwd: dir,
      env: { PATH: process.env.PATH, HOME: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      let state: { grpcTarget?: string } | undefined;
      for (let i = 0; i < 900 && !state && child.exitCode === null; i++) {
        await new Promise((r) => setTimeout(r, 100));
        try {
          state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as { grpcTarget?: string };
        } catch {
          state = undefined;
        }
      }
      if (!state) throw new Error(`skr local did not write its state file:\n${out}`);
      expect(state.grpcTarget).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(out).toContain(`gRPC key provider  ${state.grpcTarget}`);
      expect(await call(state.grpcTarget as string, 'key_provider', 'SayHello', { name: 'local' })).toEqual({ ok: true, value: { message: 'Hello local' } });

      const demo = await runCli('demo', '--state-file', stateFile);
      expect(demo.err).toBe('');
      expect(demo.code).toBe(0);
      expect(demo.out).toMatch(/4\. gRPC key provider at 127\.0\.0\.1:\d+/);
      expect(demo.out).toMatch(/UnWrapKey gave the layer options back, thumbprint \S+ \(matches what was wrapped\)/);

      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(fs.existsSync(stateFile)).toBe(false);
    } finally {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
  }, 120_000);
});
