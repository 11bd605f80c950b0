/**
 * Hostile upstreams (issue 10 item 1): a real sidecar in its own process talks to loopback servers
 * that answer every request with one of ≥ 30 malformed answers (bad status lines, headers, chunking,
 * truncation, endless and huge bodies, invalid UTF-8 / JSON / JWS, TLS garbage), for each of the four
 * upstream kinds: MAA, vault, IMDS and collateral (AMD KDS). The vault is hostile on both of its
 * paths: the direct release POST (configured emulators, Azure names) and the Azure SDK's challenge
 * flow (any other allowlisted host). Every request must get 502 or 504, the
 * process must keep serving (/status 200 afterwards), its RSS must stay under 200 MB (it starts at 75–95 MB, the compiled sidecar alone), and no log line
 * may exceed 4 KB.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadOrCreateLocalCa, loopbackServerTls } from '../../src/emulators/ca';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { SimulatedPlatform, TEST_ONLY_UVM_ROOT_SHA256 } from '../../src/snp/simulator';
import { hostileCases, startChallengeVault, startHostileServer, type HostileServer } from './hostile-upstream';

const RSS_LIMIT_BYTES = 200 * 1024 * 1024;
const MAX_LOG_LINE_BYTES = 4096;
const DEADLINE_SECONDS = 4;

interface Child {
  proc: ChildProcess;
  url: string;
  lines: string[];
  maxRss: () => number;
  stop(): Promise<void>;
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

async function startChild(config: Record<string, unknown>): Promise<Child> {
  const proc = spawn(process.execPath, [path.join(__dirname, 'hostile-child.js')], {
    env: { PATH: process.env.PATH, HOSTILE_CHILD: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let errBuf = '';
  proc.stderr?.on('data', (d: Buffer) => {
    errBuf += d.toString('utf8');
    const parts = errBuf.split('\n');
    errBuf = parts.pop() ?? '';
    lines.push(...parts);
  });
  let peak = 0;
  const sampler = setInterval(() => {
    try {
      peak = Math.max(peak, rssOf(proc.pid ?? 0));
    } catch {
      // The process has gone; the test notices through its requests.
    }
  }, 50);
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /READY (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve(m[1]);
    });
    proc.once('exit', (code) => reject(new Error(`sidecar child exited ${code}: ${lines.join('\n').slice(0, 2000)}`)));
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    proc,
    url,
    lines,
    maxRss: () => peak,
    stop: async () => {
      clearInterval(sampler);
      if (proc.exitCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

async function post(url: string, body: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, text: await res.text() };
}

describe('hostile upstreams against a real sidecar process', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-hostile-'));
  const ca = loadOrCreateLocalCa(path.join(dir, 'ca'));
  const tlsOpts = loopbackServerTls(ca);
  const servers: HostileServer[] = [];
  let maa: MaaEmulator;
  let main: Child;
  let collateralChild: Child;
  let hostile: Record<'maa' | 'vault' | 'vaultSdk' | 'imds' | 'kds', HostileServer>;
  let challengeVault: HostileServer;

  beforeAll(async () => {
    const platform = new SimulatedPlatform();
    maa = await startMaaEmulator({ ca, trustedArkPem: [platform.arkPem], trustedUvmRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256] });
    hostile = {
      maa: await startHostileServer(hostileCases('{"token":"not a jws"}'), tlsOpts),
      vault: await startHostileServer(hostileCases('{"value":"not.a.jws","kid":"x"}'), tlsOpts),
      vaultSdk: await startHostileServer(hostileCases('{"value":"not.a.jws","kid":"x"}'), tlsOpts),
      imds: await startHostileServer(hostileCases('{"access_token":"","expires_in":"soon"}')),
      kds: await startHostileServer(hostileCases('{"vcekCert":"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----"}'), tlsOpts),
    };
    challengeVault = await startChallengeVault(tlsOpts);
    servers.push(...Object.values(hostile), challengeVault);
    const common = { caPath: ca.certPath, deadlineSeconds: DEADLINE_SECONDS, imdsUrl: hostile.imds.url };
    [main, collateralChild] = await Promise.all([
      startChild({
        ...common,
        ctxDir: path.join(dir, 'ctx-main'),
        maa: [maa.endpoint, hostile.maa.endpoint],
        akv: [hostile.vault.endpoint, hostile.vaultSdk.endpoint, challengeVault.endpoint],
        sdkVaults: [hostile.vaultSdk.endpoint],
      }),
      startChild({
        ...common,
        ctxDir: path.join(dir, 'ctx-collateral'),
        maa: [maa.endpoint],
        akv: [challengeVault.endpoint],
        kdsEndpoint: hostile.kds.endpoint,
        mismatch: true,
      }),
    ]);
  }, 60_000);

  afterAll(async () => {
    await Promise.all([main?.stop(), collateralChild?.stop()]);
    await Promise.all(servers.map((s) => s.close()));
    await maa?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const runtime = Buffer.from('{}').toString('base64');
  type Kind = 'maa' | 'vault' | 'vaultSdk' | 'imds' | 'kds';
  const drive: Record<Kind, () => { child: Child; route: string; body: Record<string, unknown> }> = {
    maa: () => ({ child: main, route: '/attest/maa', body: { maa_endpoint: hostile.maa.endpoint, runtime_data: runtime } }),
    vault: () => ({
      child: main,
      route: '/key/release',
      body: { maa_endpoint: maa.endpoint, akv_endpoint: hostile.vault.endpoint, kid: 'hostile-key', access_token: 'opaque-caller-token-0123456789' },
    }),
    vaultSdk: () => ({
      child: main,
      route: '/key/release',
      body: { maa_endpoint: maa.endpoint, akv_endpoint: hostile.vaultSdk.endpoint, kid: 'hostile-key', access_token: 'opaque-caller-token-0123456789' },
    }),
    imds: () => ({ child: main, route: '/key/release', body: { maa_endpoint: maa.endpoint, akv_endpoint: challengeVault.endpoint, kid: 'hostile-key' } }),
    kds: () => ({ child: collateralChild, route: '/attest/combined', body: { runtime_data: runtime } }),
  };
  const statuses: Record<string, number[]> = {};
  /** How each kind's 502 names its upstream. */
  const NAMES: Record<Kind, RegExp> = { maa: /\bmaa\b/i, vault: /\bvault\b/, vaultSdk: /\bvault\b/, imds: /managed-identity/, kds: /amd-kds|KDS/ };

  // All four kinds at once; within a kind, waves of concurrent requests until every case was served.
  it('every request to every kind gets 502 or 504 until all of the ≥ 30 answers were served', async () => {
    await Promise.all(
      (Object.keys(drive) as Kind[]).map(async (kind) => {
        const server = hostile[kind];
        expect(server.cases.length).toBeGreaterThanOrEqual(30);
        statuses[kind] = [];
        // Concurrent releases share one in-flight identity token request, so IMDS sees fewer calls than releases.
        for (let wave = 0; wave < 40 && server.served.size < server.cases.length; wave++) {
          const { child, route, body } = drive[kind]();
          const answers = await Promise.all(Array.from({ length: 8 }, () => post(`${child.url}${route}`, body)));
          for (const a of answers) {
            statuses[kind].push(a.status);
            if (a.status !== 502 && a.status !== 504) throw new Error(`${kind}: ${a.status} ${a.text.slice(0, 300)}`);
            expect(a.text.length).toBeLessThan(1500);
            if (a.status === 502) expect({ kind, error: (JSON.parse(a.text) as { error: string }).error }).toEqual({ kind, error: expect.stringMatching(NAMES[kind]) });
          }
        }
        const missing = server.cases.map((c) => c.name).filter((n) => !server.served.has(n));
        expect({ kind, missing }).toEqual({ kind, missing: [] });
      }),
    );
    // Each vault path was the one taken: the direct POST always carries the bearer token; the SDK
    // first probes without one for the vault's challenge.
    expect(hostile.vault.authorized.length).toBeGreaterThan(0);
    expect(hostile.vault.authorized.every(Boolean)).toBe(true);
    expect(hostile.vaultSdk.authorized.some((a) => !a)).toBe(true);
    // 502 names the upstream.
    const sample = await post(`${main.url}/attest/maa`, drive.maa().body);
    expect([502, 504]).toContain(sample.status);
  }, 55_000);

  it('keeps serving, stays under 200 MB RSS, and logs no line over 4 KB', async () => {
    for (const child of [main, collateralChild]) {
      expect(child.proc.exitCode).toBeNull();
      const res = await fetch(`${child.url}/status`);
      expect(res.status).toBe(200);
      await res.text();
      expect(child.maxRss()).toBeGreaterThan(0);
      expect(child.maxRss()).toBeLessThan(RSS_LIMIT_BYTES);
      const long = child.lines.filter((l) => Buffer.byteLength(l) > MAX_LOG_LINE_BYTES);
      expect(long.map((l) => l.slice(0, 300))).toEqual([]);
      expect(child.lines.some((l) => l.includes('"request failed"'))).toBe(true);
    }
    process.stdout.write(
      `hostile-upstreams: peak RSS main ${(main.maxRss() / 1048576).toFixed(1)} MB, collateral ${(collateralChild.maxRss() / 1048576).toFixed(1)} MB; ` +
        `statuses ${JSON.stringify(Object.fromEntries(Object.entries(statuses).map(([k, v]) => [k, { 502: v.filter((s) => s === 502).length, 504: v.filter((s) => s === 504).length }])))}\n`,
    );
  });
});
