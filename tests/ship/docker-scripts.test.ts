/**
 * docker/skr.sh and the test clients, run as real processes against `skr serve --simulate` on
 * 127.0.0.1 (no Docker engine needed: SKR_BIN points at the compiled CLI, rebuilt by jest's globalSetup).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { call } from '../helpers/grpc';
import { REPO, SKR_BIN, freePort, killAll, readJson, run, start, statusOk, stop, waitFor, type Proc } from './helpers';

const SKR_SH = path.join(REPO, 'docker', 'skr.sh');
const ATTEST = path.join(REPO, 'docker', 'tests', 'attest_client.sh');
const SKR_CLIENT = path.join(REPO, 'docker', 'tests', 'skr_client.sh');
const REPORT_BYTES = 1184;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-ship-docker-'));
const sidecarArgs = Buffer.from(JSON.stringify({ certcache: { endpoint_type: 'LocalTHIM' }, maaconfig: { user_agent: 'ship-test' } })).toString('base64');

/** The environment a test gets: ours, minus the reference variables a developer may have set. */
function env(extra: Record<string, string>): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['SkrSideCarArgs', 'Port', 'LogFile', 'LogLevel', 'ServerType', 'SKR_SERVE_ARGS', 'SKR_BIN']) delete e[k];
  for (const k of Object.keys(e)) if (k.startsWith('AttestClient') || k.startsWith('SkrClient') || k.startsWith('SKR_CLIENT')) delete e[k];
  return { ...e, ...extra };
}

function outDir(name: string): string {
  const d = path.join(tmp, name);
  fs.mkdirSync(d);
  return d;
}

afterAll(async () => {
  await killAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('skr.sh + attest_client.sh against a simulated sidecar', () => {
  let sidecar: Proc;
  let url: string;
  const logFile = path.join(tmp, 'skr.log');

  beforeAll(async () => {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    sidecar = start('sh', [SKR_SH], {
      env: env({ SKR_BIN, SKR_SERVE_ARGS: '--simulate', Port: String(port), SkrSideCarArgs: sidecarArgs, LogLevel: 'debug', LogFile: logFile }),
    });
    await waitFor('sidecar /status', () => statusOk(url), 20_000, sidecar);
  });
  afterAll(() => stop(sidecar));

  it('writes raw.out (hex report, REPORT_DATA = sha256(runtime data)) and combined.out', async () => {
    const runtime = Buffer.from(JSON.stringify({ keys: [{ kty: 'RSA', kid: 'ship-test' }] }));
    const dir = outDir('attest');
    const r = await run('sh', [ATTEST], {
      env: env({ AttestClientRuntimeData: runtime.toString('base64'), SKR_SIDECAR_URL: url, SKR_OUT_DIR: dir, SKR_CLIENT_ITERATIONS: '1' }),
    });
    expect(r.out).toMatch(/POST \/attest\/raw -> HTTP 200/);
    expect(r.code).toBe(0);

    const report = String(readJson(path.join(dir, 'raw.out')).report);
    expect(report).toMatch(new RegExp(`^[0-9a-f]{${2 * REPORT_BYTES}}$`));
    const reportData = Buffer.from(report, 'hex').subarray(0x50, 0x90);
    expect(reportData.toString('hex')).toBe(createHash('sha256').update(runtime).digest('hex') + '00'.repeat(32));

    const combined = readJson(path.join(dir, 'combined.out'));
    expect(Buffer.from(String(combined.evidence), 'base64')).toHaveLength(REPORT_BYTES);
    expect(Buffer.from(String(combined.endorsements), 'base64').toString()).toMatch(/-----BEGIN CERTIFICATE-----/);
    expect(combined.endorsed_tcb).toMatch(/^[0-9a-f]{16}$/);
    // No MAA endpoint: the MAA route is not called.
    expect(fs.existsSync(path.join(dir, 'maatoken.out'))).toBe(false);
  });

  it('takes the runtime data positionally when the env var is unset (reference argument order)', async () => {
    const runtime = Buffer.from('positional');
    const dir = outDir('attest-positional');
    const r = await run('sh', [ATTEST, runtime.toString('base64')], {
      env: env({ SKR_SIDECAR_URL: url, SKR_OUT_DIR: dir, SKR_CLIENT_ITERATIONS: '1' }),
    });
    expect(r.code).toBe(0);
    const report = Buffer.from(String(readJson(path.join(dir, 'raw.out')).report), 'hex');
    expect(report.subarray(0x50, 0x70).toString('hex')).toBe(createHash('sha256').update(runtime).digest('hex'));
  });

  it('passes LogLevel and LogFile to the sidecar', () => {
    expect(fs.existsSync(logFile)).toBe(true);
    expect(fs.readFileSync(logFile, 'utf8')).toMatch(/sidecar listening/);
  });

  it('skr_client.sh writes the answer to keyrelease.out and exits 1 when the release fails', async () => {
    const dir = outDir('skr-fail');
    const r = await run('sh', [SKR_CLIENT], {
      // Port 1 on loopback: nothing answers there, so the release cannot succeed.
      env: env({ SkrClientMAAEndpoint: '127.0.0.1:1', SkrClientAKVEndpoint: '127.0.0.1:1', SkrClientKID: 'k', SKR_SIDECAR_URL: url, SKR_OUT_DIR: dir, SKR_CLIENT_ITERATIONS: '1' }),
    });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/POST \/key\/release -> HTTP [45]\d\d/);
    expect(typeof readJson(path.join(dir, 'keyrelease.out')).error).toBe('string');
  });
});

describe('skr.sh arguments', () => {
  it('falls back to $1 = SkrSideCarArgs and $2 = Port, passes further arguments on, and execs the sidecar', async () => {
    const port = await freePort();
    const u = `http://127.0.0.1:${port}`;
    const p = start('sh', [SKR_SH, sidecarArgs, String(port), '--simulate'], { env: env({ SKR_BIN }) });
    try {
      await waitFor('positional sidecar', () => statusOk(u), 20_000, p);
      expect(p.output()).toContain(`SkrSideCarArgs = ${sidecarArgs}`);
      // exec: the pid we started is node itself, so SIGTERM reaches it and it shuts down cleanly.
      p.child.kill('SIGTERM');
      const { code } = await p.exited;
      expect(p.output()).toMatch(/SIGTERM received, shutting down/);
      expect(code).toBe(0);
    } finally {
      await stop(p);
    }
  });

  it('hands SkrSideCarArgs to the sidecar, which refuses a malformed one', async () => {
    const r = await run('sh', [SKR_SH], { env: env({ SKR_BIN, SKR_SERVE_ARGS: '--simulate', Port: '0', SkrSideCarArgs: Buffer.from('{"certcache": 7}').toString('base64') }) });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/SkrSideCarArgs\.certcache must be an object/);
  });

  it('ServerType=grpc serves the key provider on Port (a real gRPC client says hello) and exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const p = start('sh', [SKR_SH], { env: env({ SKR_BIN, ServerType: 'gRPC', Port: String(port), SKR_SERVE_ARGS: '--simulate' }) });
    try {
      const hello = () => call(`127.0.0.1:${port}`, 'keyprovider', 'SayHello', { name: 'skr.sh' }).then((r) => (r.ok ? r.value : undefined));
      expect(await waitFor('gRPC SayHello', hello, 20_000, p)).toEqual({ message: 'Hello skr.sh' });
      expect(p.output()).toMatch(/ serve .*--server-type grpc/);
      expect(p.output()).toMatch(new RegExp(`"address":"127\\.0\\.0\\.1:${port}"`));
      expect(p.output()).toMatch(new RegExp(`sidecar ready at grpc://127\\.0\\.0\\.1:${port}`));
      p.child.kill('SIGTERM');
      expect((await p.exited).code).toBe(0);
    } finally {
      await stop(p);
    }
  });

  it('refuses any ServerType but http and grpc', async () => {
    const x = await run('sh', [SKR_SH], { env: env({ SKR_BIN, ServerType: 'carrier-pigeon' }) });
    expect(x.code).toBe(2);
    expect(x.out).toMatch(/ServerType="carrier-pigeon" is not supported: use http \(the HTTP API\) or grpc/);
  });

  it('accepts ServerType http in any case, and names a bad LogLevel (from the sidecar)', async () => {
    const r = await run('sh', [SKR_SH], { env: env({ SKR_BIN, ServerType: 'HTTP', SKR_SERVE_ARGS: '--simulate', LogLevel: 'loud' }) });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/LogLevel "loud" is not one of/);
  });

  it('says how to point SKR_BIN at the CLI when the binary is missing', async () => {
    const r = await run('sh', [SKR_SH], { env: env({ SKR_BIN: path.join(tmp, 'no-such-skr') }) });
    expect(r.code).toBe(127);
    expect(r.out).toMatch(/set SKR_BIN to the skr command/);
  });
});

describe('test clients without a sidecar', () => {
  it('attest_client.sh stops at once and exits 0 on SIGTERM while looping', async () => {
    const dir = outDir('sigterm');
    const port = await freePort();
    const p = start('sh', [ATTEST], {
      env: env({ AttestClientRuntimeData: 'aGVsbG8=', SKR_SIDECAR_URL: `http://127.0.0.1:${port}`, SKR_OUT_DIR: dir, SKR_CLIENT_INTERVAL: '600' }),
    });
    // One round has run (and failed: nothing listens) once raw.out exists; the client then sleeps.
    await waitFor('first round', () => (fs.existsSync(path.join(dir, 'combined.out')) ? true : undefined), 20_000, p);
    p.child.kill('SIGTERM');
    const { code, signal } = await p.exited;
    expect(signal).toBeNull();
    expect(code).toBe(0);
    expect(p.output()).toMatch(/attest_client: stopping/);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('.'))).toEqual([]);
  });

  it('records a connection failure in the output file and exits 1 after the last round', async () => {
    const dir = outDir('down');
    const port = await freePort();
    const r = await run('sh', [ATTEST], {
      env: env({ AttestClientRuntimeData: 'aGVsbG8=', AttestClientMAAEndpoint: 'maa.example', SKR_SIDECAR_URL: `http://127.0.0.1:${port}`, SKR_OUT_DIR: dir, SKR_CLIENT_ITERATIONS: '2', SKR_CLIENT_INTERVAL: '0' }),
    });
    expect(r.code).toBe(1);
    expect(r.out.match(/POST \/attest\/maa -> HTTP 000/g)).toHaveLength(2);
    expect(String(readJson(path.join(dir, 'maatoken.out')).error)).toMatch(/no answer from/);
  });

  it('refuses values that would break the JSON body, and non-numeric loop settings', async () => {
    const q = await run('sh', [ATTEST], { env: env({ AttestClientRuntimeData: 'a"b', SKR_OUT_DIR: tmp }) });
    expect(q.code).toBe(2);
    expect(q.out).toMatch(/AttestClientRuntimeData must not contain quotes or backslashes/);
    const n = await run('sh', [SKR_CLIENT], { env: env({ SKR_CLIENT_ITERATIONS: 'once', SKR_OUT_DIR: tmp }) });
    expect(n.code).toBe(2);
    expect(n.out).toMatch(/SKR_CLIENT_ITERATIONS must be a whole number/);
  });
});
