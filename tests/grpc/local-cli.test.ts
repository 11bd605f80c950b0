/**
 * `skr local --grpc-port 0` through the real CLI entry point in a child process: the state file names
 * the gRPC key provider (grpcTarget), a gRPC client is answered there, and `skr demo` (in this process,
 * against that stack) shows an UnWrapKey giving the layer options back. SIGTERM stops it all.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from '../helpers/cli';
import { call } from '../helpers/grpc';
import { startLocalChild } from '../helpers/local-child';

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
    const local = startLocalChild(dir, stateFile, ['--port', '0', '--grpc-port', '0']);
    try {
      const state = await local.readState<{ grpcTarget?: string }>();
      expect(state.grpcTarget).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(local.output()).toContain(`gRPC key provider  ${state.grpcTarget}`);
      expect(await call(state.grpcTarget as string, 'key_provider', 'SayHello', { name: 'local' })).toEqual({ ok: true, value: { message: 'Hello local' } });

      const demo = await runCli('demo', '--state-file', stateFile);
      expect(demo.err).toBe('');
      expect(demo.code).toBe(0);
      expect(demo.out).toMatch(/4\. gRPC key provider at 127\.0\.0\.1:\d+/);
      expect(demo.out).toMatch(/UnWrapKey gave the layer options back, thumbprint \S+ \(matches what was wrapped\)/);

      local.child.kill('SIGTERM');
      expect(await local.exited).toBe(0);
      expect(fs.existsSync(stateFile)).toBe(false);
    } finally {
      await local.killIfRunning();
    }
  }, 120_000);
});
