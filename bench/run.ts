/**
 * `npm run bench`: issue 7's measurements, side by side in one run on one machine.
 *
 * The servers (skr local in-process: sidecar + IMDS/MAA/Key Vault/Managed HSM emulators, and a bare
 * express "floor" route) run in this process; the load comes from a forked process (loadgen.ts)
 * so it does not share their event loop. Rows compared with each other are measured in alternating
 * slices (interleaved()), so that the shared machine's drift in speed hits them alike. Cold releases
 * and start-up time also use fresh `skr local` and `skr serve --simulate` processes (dist/): only a
 * new process has an empty identity token cache (msal keeps it process-wide). Compiled ahead by `tsc -p bench` (no TypeScript at run time).
 *
 * Env: BENCH_SECONDS (sustained phase, default 20; the other phases scale with it),
 *      BENCH_COLD_RUNS (fresh processes for cold releases and start-up, default 8).
 */
import { spawn, spawnSync } from 'node:child_process';
import { fork, type ChildProcess } from 'node:child_process';
import { constants, createPrivateKey, generateKeyPairSync, privateDecrypt, publicEncrypt, randomBytes, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import express from 'express';
import { importReleasableKey, sdkJwkFor } from '../src/akv/import-key';
import { buildReleasePolicy } from '../src/akv/policy';
import { staticTokenCredential } from '../src/akv/credentials';
import { createWrappingKey } from '../src/akv/wrapping-key';
import { startLocalStack, type LocalStack, type LocalState } from '../src/cli/local-stack';
import { createHttpsFetch } from '../src/common/https-fetch';
import { wrapToKey } from '../src/grpc/key-info';
import { buildSevSnpVmRequest, serializeSevSnpVmRequest } from '../src/maa/request';
import type { ReleaseTuning } from '../src/akv/release-tuning';
import { createLogger } from '../src/server/logger';
import { reportDataFor } from '../src/snp/report';
import type { Job, JobResult, Step } from './loadgen';
import { benchCvmRelease, cvmBenchLines } from './cvm-release';
import { startMinimalRelease } from './minimal-release';

/** The package root: this file runs from the compiled copy under node_modules/.cache. */
function findRepo(): string {
  for (let d = __dirname; d !== path.dirname(d); d = path.dirname(d)) {
    try {
      if ((JSON.parse(fs.readFileSync(path.join(d, 'package.json'), 'utf8')) as { name?: string }).name === 'skr-sidecar') return d;
    } catch {
      // keep looking
    }
  }
  throw new Error('cannot find the skr-sidecar package root');
}
const REPO = findRepo();
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const COLD_RUNS = Number(process.env.BENCH_COLD_RUNS ?? 8);
if (!(SECONDS > 0) || !Number.isInteger(COLD_RUNS) || COLD_RUNS < 1) throw new Error('BENCH_SECONDS must be > 0 and BENCH_COLD_RUNS ≥ 1');
/** Length of each comparison phase (attest at 1/8/64, warm release, floors). */
const PHASE_MS = Math.max(1000, Math.round((SECONDS * 1000) / 4));
const WARMUP_MS = Math.max(500, Math.round(PHASE_MS / 4));

// --- helpers ------------------------------------------------------------------------------------

class LoadGen {
  private readonly child: ChildProcess;
  private next = 1;
  private readonly pending = new Map<number, (r: JobResult) => void>();

  constructor() {
    this.child = fork(path.join(__dirname, 'loadgen.js'), [], { stdio: 'inherit' });
    this.child.on('message', (r: JobResult) => {
      this.pending.get(r.id)?.(r);
      this.pending.delete(r.id);
    });
  }

  run(job: Omit<Job, 'id'>): Promise<JobResult> {
    const id = this.next++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.child.send({ ...job, id });
    });
  }

  close(): void {
    this.child.kill();
  }
}

interface Stats {
  requests: number;
  errors: number;
  rps: number;
  p50: number;
  p99: number;
  errorSamples?: string[];
  /** Interleaved rows: the p50 of each slice, in the order run (how much the machine moved). */
  sliceP50s?: number[];
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function stats(r: JobResult): Stats {
  const s: Stats = { requests: r.ok, errors: r.errors, rps: (r.ok / r.elapsedMs) * 1000, p50: pct(r.latenciesMs, 50), p99: pct(r.latenciesMs, 99) };
  if (r.errorSamples.length) s.errorSamples = r.errorSamples;
  return s;
}

/** Several runs of one job as one result: counts and time added, latencies merged (sorted). */
function pool(rs: JobResult[]): JobResult {
  return {
    id: 0,
    ok: rs.reduce((a, r) => a + r.ok, 0),
    errors: rs.reduce((a, r) => a + r.errors, 0),
    errorSamples: rs.flatMap((r) => r.errorSamples).slice(0, 5),
    elapsedMs: rs.reduce((a, r) => a + r.elapsedMs, 0),
    latenciesMs: rs.flatMap((r) => r.latenciesMs).sort((a, b) => a - b),
  };
}

/** Slices per row when rows are measured interleaved. */
const SLICES = 6;

/**
 * Rows compared with each other, measured in alternating slices (A B C D A B C D ...) with the
 * latencies of each row's slices pooled: a drift in this shared machine's speed during the phase
 * then hits every row alike instead of whichever row ran at that moment. Each slice warms its new
 * keep-alive connections first, unrecorded.
 */
async function interleaved<K extends string>(load: LoadGen, jobs: Record<K, Omit<Job, 'id' | 'durationMs' | 'warmupMs' | 'count'>>): Promise<Record<K, Stats>> {
  const names = Object.keys(jobs) as K[];
  const pooled = new Map<K, JobResult[]>(names.map((n) => [n, []]));
  const sliceMs = Math.max(250, Math.round(PHASE_MS / SLICES));
  const warmupMs = Math.max(100, Math.round(WARMUP_MS / SLICES));
  for (let i = 0; i < SLICES; i++) {
    for (const n of names) pooled.get(n)!.push(await load.run({ ...jobs[n], warmupMs, durationMs: sliceMs }));
  }
  const out = {} as Record<K, Stats>;
  for (const n of names) {
    const slices = pooled.get(n)!;
    out[n] = { ...stats(pool(slices)), sliceP50s: slices.map((r) => round(pct(r.latenciesMs, 50))) };
  }
  return out;
}

const round = (x: number, d = 2) => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : x);
const rssMb = () => round(process.memoryUsage().rss / 2 ** 20, 1);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitStatus(url: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(`${url}/status`);
      await r.text();
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > end) throw new Error(`${url}/status not ready after ${timeoutMs} ms`);
    await sleep(5);
  }
}

/** A managed-identity token for Managed HSM straight from the IMDS emulator (no SDK, no process-wide cache). */
async function imdsToken(imdsUrl: string): Promise<string> {
  const u = `${imdsUrl}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${encodeURIComponent('https://managedhsm.azure.net')}`;
  const r = await fetch(u, { headers: { Metadata: 'true' } });
  if (r.status !== 200) throw new Error(`IMDS answered ${r.status}`);
  return ((await r.json()) as { access_token: string }).access_token;
}

/** Import an oct-HSM key (Managed HSM: symmetric keys live there) whose release policy trusts this stack's MAA and platform. */
async function importBenchKey(state: LocalState, name: string): Promise<void> {
  const ca = fs.readFileSync(state.caCertPath, 'utf8');
  const f = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
  try {
    await importReleasableKey({
      vaultEndpoint: state.hsmEndpoint,
      name,
      jwk: sdkJwkFor('oct-HSM', randomBytes(32)),
      policy: buildReleasePolicy({
        authority: `https://${state.maaEndpoint}`,
        anyOfGroups: [[
          { claim: 'x-ms-sevsnpvm-hostdata', equals: state.hostData },
          { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' },
          { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' },
        ]],
      }),
      credential: staticTokenCredential(await imdsToken(state.imdsUrl)),
      fetch: f,
      relaxedChallenge: true,
    });
  } finally {
    f.destroy();
  }
}

/**
 * An RSA-HSM key in the Managed HSM (where the bench key is) for the gRPC key provider, with the same policy as the bench key, and
 * an annotation packet wrapping 100 bytes of layer options to it: UnWrapKey's input.
 */
async function importUnwrapKey(state: LocalState, name: string): Promise<{ packet: Buffer }> {
  const ca = fs.readFileSync(state.caCertPath, 'utf8');
  const f = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
  const pair = generateKeyPairSync('rsa', { modulusLength: 3072 });
  try {
    await importReleasableKey({
      vaultEndpoint: state.hsmEndpoint,
      name,
      jwk: sdkJwkFor('RSA-HSM', pair.privateKey),
      policy: buildReleasePolicy({ authority: `https://${state.maaEndpoint}`, anyOfGroups: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: state.hostData }]] }),
      credential: staticTokenCredential(await imdsToken(state.imdsUrl)),
      fetch: f,
      relaxedChallenge: true,
    });
  } finally {
    f.destroy();
  }
  return { packet: wrapToKey(randomBytes(100), { kid: name, publicKey: pair.publicKey, kmsEndpoint: state.hsmEndpoint, attesterEndpoint: state.maaEndpoint }) };
}

/** p50 of: import an RSA-3072 private JWK, then one RSA-OAEP-SHA256 decryption with it (what UnWrapKey does per call). */
function rsaUnwrapCostMs(): number {
  const pair = generateKeyPairSync('rsa', { modulusLength: 3072 });
  const jwk = pair.privateKey.export({ format: 'jwk' });
  const ct = publicEncrypt({ key: pair.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, randomBytes(100));
  const times: number[] = [];
  for (let i = 0; i < 40; i++) {
    const t0 = performance.now();
    privateDecrypt({ key: createPrivateKey({ key: jwk, format: 'jwk' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, ct);
    times.push(performance.now() - t0);
  }
  return pct(times.sort((a, b) => a - b), 50);
}

/** The requests a release needs from the emulators, made directly: MAA attest and vault release with a pre-made key and tokens. */
async function floorSteps(stack: LocalStack, keyName: string): Promise<{ maa: Step; vault: Step; caPem: string; kek: KeyObject }> {
  const caPem = fs.readFileSync(stack.state.caCertPath, 'utf8');
  const wrapping = createWrappingKey();
  const { report } = await stack.platform.evidenceSource().getReport({ reportData: reportDataFor(wrapping.runtimeData) });
  const uvm = fs.readFileSync(path.join(stack.state.securityContextDir, 'reference-info-base64'), 'utf8').trim();
  const maa: Step = {
    url: `https://${stack.state.maaEndpoint}/attest/SevSnpVm?api-version=2020-10-01`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: serializeSevSnpVmRequest(
      buildSevSnpVmRequest({ report, vcekPem: stack.platform.vcekPem, chainPem: stack.platform.askPem + stack.platform.arkPem, uvmEndorsementBase64: uvm, runtimeData: wrapping.runtimeData }),
    ),
  };
  const f = createHttpsFetch({ extraCaPem: [caPem], keepAlive: false });
  let maaToken: string;
  try {
    const r = await f(maa.url, { method: 'POST', headers: maa.headers, body: maa.body });
    maaToken = ((await r.json()) as { token: string }).token;
    if (!maaToken) throw new Error(`MAA emulator answered ${r.status} to the floor request`);
  } finally {
    f.destroy();
  }
  const vault: Step = {
    url: `https://${stack.state.hsmEndpoint}/keys/${keyName}/release?api-version=7.4`,
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${await imdsToken(stack.state.imdsUrl)}` },
    body: JSON.stringify({ target: maaToken, enc: 'CKM_RSA_AES_KEY_WRAP' }),
  };
  return { maa, vault, caPem, kek: wrapping.privateKey };
}

function releaseStep(state: LocalState, kid: string): Step {
  return {
    url: `${state.sidecarUrl}/key/release`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ maa_endpoint: state.maaEndpoint, akv_endpoint: state.hsmEndpoint, kid }),
  };
}

async function startStack(dir: string, release?: ReleaseTuning): Promise<{ stack: LocalStack; readyMs: number }> {
  const t0 = performance.now();
  // With the gRPC key provider beside the HTTP API: UnWrapKey is measured next to /key/release.
  const stack = await startLocalStack({ stateDir: dir, port: 0, grpcPort: 0, logger: createLogger({ silent: true }), ...(release ? { release } : {}) });
  await waitStatus(stack.state.sidecarUrl);
  return { stack, readyMs: performance.now() - t0 };
}

/** One fresh `skr local` process: time to /status ready, then one release (pool empty, every cache empty). */
async function coldRun(dir: string, i: number): Promise<{ startupMs: number; releaseMs: number; status: number; rssMb: number }> {
  const stateFile = path.join(dir, 'state.json');
  fs.rmSync(stateFile, { force: true });
  const t0 = performance.now();
  const child = spawn(process.execPath, [path.join(REPO, 'dist', 'cli', 'main.js'), 'local', '--port', '0', '--state-dir', dir, '--state-file', stateFile], {
    env: { ...process.env, SKR_WRAPPING_KEY_POOL_SIZE: '0' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    let state: LocalState | undefined;
    while (!state) {
      if (child.exitCode !== null) throw new Error(`skr local exited: ${stderr.slice(-500)}`);
      try {
        state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as LocalState;
      } catch {
        await sleep(2);
      }
    }
    await waitStatus(state.sidecarUrl);
    const startupMs = performance.now() - t0;
    const kid = `cold-${i}`;
    await importBenchKey(state, kid);
    const s = performance.now();
    const r = await fetch(`${state.sidecarUrl}/key/release`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ maa_endpoint: state.maaEndpoint, akv_endpoint: state.hsmEndpoint, kid }),
    });
    await r.text();
    const releaseMs = performance.now() - s;
    return { startupMs, releaseMs, status: r.status, rssMb: vmRssMb(child.pid) };
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

const vmRssMb = (pid: number | undefined) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? round(Number(m[1]) / 1024, 1) : NaN;
};

/** The Node.js the container image ships (scripts/test-image-node.sh --which fetches it once from npm). */
function imageNodePath(): { path: string; version: string } | { unavailable: string } {
  const r = spawnSync('bash', [path.join(REPO, 'scripts', 'test-image-node.sh'), '--which'], { encoding: 'utf8', timeout: 300_000 });
  const p = r.stdout.trim();
  if (r.status !== 0 || !p) return { unavailable: (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`).slice(0, 200) };
  const v = spawnSync(p, ['--version'], { encoding: 'utf8' });
  return v.status === 0 ? { path: p, version: v.stdout.trim() } : { unavailable: `${p} --version failed` };
}

/** `skr serve --simulate` alone (no emulators): time to /status ready, and resident memory once idle. */
async function sidecarAloneRun(nodePath = process.execPath): Promise<{ startupMs: number; idleRssMb: number }> {
  const t0 = performance.now();
  const child = spawn(nodePath, [path.join(REPO, 'dist', 'cli', 'main.js'), 'serve', '--simulate', '--port', '0', '--log-level', 'error'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const onData = (c: Buffer) => (output += c.toString());
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    let url: string | undefined;
    while (!url) {
      if (child.exitCode !== null) throw new Error(`skr serve exited: ${output.slice(-500)}`);
      url = /ready at (http:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1];
      if (!url) await sleep(2);
    }
    await waitStatus(url);
    const startupMs = performance.now() - t0;
    await sleep(3000); // the wrapping-key pool fills in the background
    return { startupMs, idleRssMb: vmRssMb(child.pid) };
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

/** The bare floor: express with the sidecar's body parsing, answering a JSON body the size of /attest/raw's. */
async function startFloorServer(bodyBytes: number, device: LocalStack['platform']): Promise<{ url: string; deviceUrl: string; server: Server }> {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(express.text({ type: () => true, limit: '1mb' }));
  const report = 'a'.repeat(bodyBytes - JSON.stringify({ report: '' }).length);
  app.post('/floor', (_req, res) => {
    res.json({ report });
  });
  // The same plus the simulated device's own work (sign a report for the runtime data), nothing else.
  const evidence = device.evidenceSource();
  app.post('/floor-device', async (req, res) => {
    const data = Buffer.from((JSON.parse(req.body as string) as { runtime_data: string }).runtime_data, 'base64');
    res.json({ report: (await evidence.getReport({ reportData: reportDataFor(data) })).report.toString('hex') });
  });
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url: `${base}/floor`, deviceUrl: `${base}/floor-device`, server };
}

// --- the run ------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (!fs.existsSync(path.join(REPO, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` (npm run bench does)');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-bench-'));
  const load = new LoadGen();
  const log = (s: string) => process.stderr.write(`bench: ${s}\n`);
  const out: Record<string, unknown> = {
    when: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, memGb: round(os.totalmem() / 2 ** 30, 1), node: process.version, loadavgBefore: os.loadavg().map((x) => round(x)) },
    settings: { BENCH_SECONDS: SECONDS, BENCH_COLD_RUNS: COLD_RUNS, phaseMs: PHASE_MS, warmupMs: WARMUP_MS },
  };
  try {
    // Start-up (in-process) and idle memory once the pool has filled.
    log('starting skr local in-process');
    const dir = path.join(tmp, 'stack');
    const first = await startStack(dir);
    let stack = first.stack;
    await sleep(1500);
    const idleRss = rssMb();

    // /attest/raw vs the bare express floor.
    const rawBody = JSON.stringify({ runtime_data: Buffer.from('{"bench":true}').toString('base64') });
    const probe = await fetch(`${stack.state.sidecarUrl}/attest/raw`, { method: 'POST', body: rawBody });
    const rawSize = (await probe.text()).length;
    const floor = await startFloorServer(rawSize, stack.platform);
    const rawStep: Step = { url: `${stack.state.sidecarUrl}/attest/raw`, method: 'POST', headers: { 'content-type': 'application/json' }, body: rawBody };
    const floorStep: Step = { url: floor.url, method: 'POST', headers: { 'content-type': 'application/json' }, body: rawBody };
    const deviceStep: Step = { ...floorStep, url: floor.deviceUrl };
    const attest: Record<string, unknown>[] = [];
    for (const c of [1, 8, 64]) {
      log(`/attest/raw at concurrency ${c}`);
      const { sidecar, bare, withDevice } = await interleaved(load, {
        sidecar: { steps: [rawStep], concurrency: c },
        bare: { steps: [floorStep], concurrency: c },
        withDevice: { steps: [deviceStep], concurrency: c },
      });
      attest.push({ concurrency: c, sidecar, floor: bare, floorWithDevice: withDevice, throughputRatio: round(sidecar.rps / bare.rps), throughputRatioVsFloorWithDevice: round(sidecar.rps / withDevice.rps) });
    }
    out.attestRaw = { responseBytes: rawSize, runs: attest };

    // Warm /key/release at concurrency 1 vs the emulator calls made directly.
    log('warm /key/release');
    await importBenchKey(stack.state, 'bench');
    const rel = releaseStep(stack.state, 'bench');
    const f = await floorSteps(stack, 'bench');
    // The same vault call plus only what any release must do (minimal-release.ts): the lower bound.
    const minimal = await startMinimalRelease({ vault: { url: f.vault.url, headers: f.vault.headers ?? {}, body: f.vault.body ?? '' }, caPem: f.caPem, kek: f.kek, enc: 'CKM_RSA_AES_KEY_WRAP' });
    const rows = await interleaved(load, {
      warm: { steps: [rel], concurrency: 1 },
      floorFull: { steps: [f.maa, f.vault], concurrency: 1, caPem: f.caPem },
      floorVault: { steps: [f.vault], concurrency: 1, caPem: f.caPem },
      minimalRelease: { steps: [{ ...rel, url: minimal.url }], concurrency: 1 },
      minimalExpress: { steps: [{ ...rel, url: minimal.expressUrl }], concurrency: 1 },
    });
    await minimal.close();
    const { warm, floorFull, floorVault, minimalRelease, minimalExpress } = rows;

    // Warm gRPC UnWrapKey (ocicrypt's call: release + RSA-OAEP unwrap) next to warm /key/release of
    // the same RSA key from the same vault, interleaved.
    log('warm UnWrapKey vs /key/release (RSA key in the Managed HSM)');
    const unwrapKey = await importUnwrapKey(stack.state, 'bench-rsa');
    const relRsa = releaseStep(stack.state, 'bench-rsa');
    const grpcRows = await interleaved(load, {
      httpRelease: { steps: [relRsa], concurrency: 1 },
      grpcUnwrap: { steps: [{ url: '', method: 'POST', grpcUnwrap: { target: stack.state.grpcTarget as string, packetBase64: unwrapKey.packet.toString('base64') } }], concurrency: 1 },
    });
    // What UnWrapKey must add whatever serves it: one RSA-OAEP-SHA256 decryption with a key imported
    // fresh from the released JWK (released keys are never cached), measured here in-process.
    const rsaDecryptMs = rsaUnwrapCostMs();
    out.unwrapKey = {
      keyReleaseRsa: grpcRows.httpRelease,
      unwrapKey: grpcRows.grpcUnwrap,
      p50Ratio: round(grpcRows.grpcUnwrap.p50 / grpcRows.httpRelease.p50),
      rsa3072DecryptP50Ms: round(rsaDecryptMs),
      p50RatioLessDecrypt: round((grpcRows.grpcUnwrap.p50 - rsaDecryptMs) / grpcRows.httpRelease.p50),
      goal: '<= 1.2',
    };

    // 64 concurrent releases, sustained, with memory sampled under load.
    log(`/key/release at concurrency 64 for ${SECONDS} s`);
    let peakRss = rssMb();
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssMb())), 200);
    const sustained = stats(await load.run({ steps: [rel], concurrency: 64, warmupMs: WARMUP_MS, durationMs: SECONDS * 1000 }));
    clearInterval(sampler);
    const floorVault64 = stats(await load.run({ steps: [f.vault], concurrency: 64, warmupMs: WARMUP_MS, durationMs: PHASE_MS, caPem: f.caPem }));
    // At the sidecar's own limit on releases in flight (more are refused with 429 by design, issue 6).
    const at16 = stats(await load.run({ steps: [rel], concurrency: 16, warmupMs: WARMUP_MS, durationMs: PHASE_MS }));

    // Warm, but with MAA token reuse off: every release attests (keys still from the pool).
    log('warm /key/release with MAA token reuse off');
    await stack.close();
    const second = await startStack(dir, { maaTokenReuse: false });
    stack = second.stack;
    await importBenchKey(stack.state, 'bench-noreuse');
    const relNoReuse = releaseStep(stack.state, 'bench-noreuse');
    const f2 = await floorSteps(stack, 'bench-noreuse');
    await sleep(1000); // let the pool fill
    const noReuse = await interleaved(load, {
      sidecar: { steps: [relNoReuse], concurrency: 1 },
      floor: { steps: [f2.maa, f2.vault], concurrency: 1, caPem: f2.caPem },
    });
    const warmNoReuse = noReuse.sidecar;
    const floorFull2 = noReuse.floor;
    await stack.close();
    floor.server.close();

    // Cold in a warm process: a new stack and sidecar (empty pool, token cache, vault clients,
    // collateral cache, new TLS connections); only msal's process-wide identity token survives.
    // The new emulators are warmed first by the direct calls, as Azure's services always are.
    const firstRelease = async (tuning: ReleaseTuning | undefined, kid: string, settleMs: number): Promise<number | undefined> => {
      const s = (await startStack(dir, tuning)).stack;
      try {
        await importBenchKey(s.state, kid);
        const direct = await floorSteps(s, kid);
        await load.run({ steps: [direct.maa, direct.vault], concurrency: 1, count: 3, caPem: direct.caPem });
        await sleep(settleMs);
        const r = await load.run({ steps: [releaseStep(s.state, kid)], concurrency: 1, count: 1 });
        return r.ok === 1 ? r.latenciesMs[0] : undefined;
      } finally {
        await s.close();
      }
    };
    log(`${COLD_RUNS} cold releases in this process`);
    const coldInProcess: number[] = [];
    for (let i = 0; i < COLD_RUNS; i++) {
      const ms = await firstRelease({ wrappingKeyPoolSize: 0 }, `cold-in-process-${i}`, 0);
      if (ms !== undefined) coldInProcess.push(ms);
    }
    coldInProcess.sort((a, b) => a - b);
    // The same with the default pool given a moment to fill: what a deployed sidecar's first release sees.
    log(`${COLD_RUNS} first releases after start with the pool filled, in this process`);
    const coldPoolReady: number[] = [];
    for (let i = 0; i < COLD_RUNS; i++) {
      const ms = await firstRelease(undefined, `cold-pool-${i}`, 1500);
      if (ms !== undefined) coldPoolReady.push(ms);
    }
    coldPoolReady.sort((a, b) => a - b);

    // The sidecar alone (skr serve --simulate): start-up and idle memory.
    log('skr serve --simulate start-up and idle memory');
    const alone: Awaited<ReturnType<typeof sidecarAloneRun>>[] = [];
    for (let i = 0; i < 3; i++) alone.push(await sidecarAloneRun());
    // The same on the Node.js the container image ships (what is deployed), when it can be had.
    const imageNode = imageNodePath();
    let onImageNode: { node: string; runs: Awaited<ReturnType<typeof sidecarAloneRun>>[] } | { unavailable: string };
    if ('path' in imageNode) {
      log(`skr serve --simulate on the image's Node.js (${imageNode.version})`);
      const runs: Awaited<ReturnType<typeof sidecarAloneRun>>[] = [];
      for (let i = 0; i < 3; i++) runs.push(await sidecarAloneRun(imageNode.path));
      onImageNode = { node: imageNode.version, runs };
    } else onImageNode = imageNode;

    // Cold: fresh processes, first release right after /status, pool size 0.
    log(`${COLD_RUNS} cold starts`);
    const coldDir = path.join(tmp, 'cold');
    const cold: Awaited<ReturnType<typeof coldRun>>[] = [];
    for (let i = 0; i < COLD_RUNS; i++) cold.push(await coldRun(coldDir, i));
    const coldMs = cold.filter((c) => c.status === 200).map((c) => c.releaseMs).sort((a, b) => a - b);
    const laterStarts = cold.slice(1).map((c) => c.startupMs).sort((a, b) => a - b);

    out.release = {
      warm: {
        sidecar: warm,
        floorMaaPlusVault: floorFull,
        floorVaultOnly: floorVault,
        minimalRelease,
        minimalExpress,
        p50VsFloor: round(warm.p50 / floorFull.p50),
        p50VsVaultOnlyFloor: round(warm.p50 / floorVault.p50),
        minimalP50VsVaultOnlyFloor: round(minimalRelease.p50 / floorVault.p50),
        minimalExpressP50VsVaultOnlyFloor: round(minimalExpress.p50 / floorVault.p50),
        p50VsMinimal: round(warm.p50 / minimalRelease.p50),
      },
      warmWithoutTokenReuse: { sidecar: warmNoReuse, floorMaaPlusVault: floorFull2, p50VsFloor: round(warmNoReuse.p50 / floorFull2.p50) },
      coldInWarmProcess: {
        runs: COLD_RUNS,
        errors: COLD_RUNS - coldInProcess.length,
        p50: round(pct(coldInProcess, 50)),
        p99: round(pct(coldInProcess, 99)),
        p50VsFloor: round(pct(coldInProcess, 50) / floorFull.p50),
      },
      coldInWarmProcessPoolReady: {
        runs: COLD_RUNS,
        errors: COLD_RUNS - coldPoolReady.length,
        p50: round(pct(coldPoolReady, 50)),
        p99: round(pct(coldPoolReady, 99)),
        p50VsFloor: round(pct(coldPoolReady, 50) / floorFull.p50),
      },
      cold: {
        runs: cold.length,
        errors: cold.length - coldMs.length,
        p50: round(pct(coldMs, 50)),
        p99: round(pct(coldMs, 99)),
        p50VsFloor: round(pct(coldMs, 50) / floorFull.p50),
        samplesMs: cold.map((c) => round(c.releaseMs)),
      },
      sustained64: { ...sustained, p99OverP50: round(sustained.p99 / sustained.p50), floorVaultOnly64: floorVault64 },
      concurrency16: { ...at16, p99OverP50: round(at16.p99 / at16.p50) },
    };
    out.imageNode =
      'runs' in onImageNode
        ? { node: onImageNode.node, idleRssMb: onImageNode.runs.map((a) => a.idleRssMb), toReadyMs: onImageNode.runs.map((a) => round(a.startupMs)) }
        : onImageNode;
    out.memory = { sidecarAloneIdleRssMb: alone.map((a) => a.idleRssMb), inProcessStackIdleRssMb: idleRss, inProcessStackPeakRssUnderLoadMb: peakRss, freshSkrLocalProcessRssAfterOneReleaseMb: cold.map((c) => c.rssMb) };
    out.startup = {
      sidecarAloneToReadyMs: alone.map((a) => round(a.startupMs)),
      sidecarAloneToReadyP50Ms: round(pct(alone.map((a) => a.startupMs).sort((a, b) => a - b), 50)),
      inProcessStartLocalStackToReadyMs: round(first.readyMs),
      skrLocalProcessFirstStartMs: round(cold[0].startupMs),
      skrLocalProcessLaterStartsP50Ms: round(pct(laterStarts, 50)),
      skrLocalProcessStartsMs: cold.map((c) => round(c.startupMs)),
    };
    // Issue 14: the CVM release (swtpm + emulators, in process), against its own floor.
    log('CVM release on swtpm: warm vs vault call + one TPM RSA_Decrypt, and the first release');
    out.cvmRelease = await benchCvmRelease(Math.max(50, Math.round(SECONDS * 10)));
    // Issue 22: the same on a simulated Intel TDX CVM (TD quote from IMDS on the first release).
    log('TDX CVM release on swtpm: the same rows on a simulated Intel TDX CVM');
    out.tdxCvmRelease = await benchCvmRelease(Math.max(50, Math.round(SECONDS * 10)), 'tdx');
    (out.machine as Record<string, unknown>).loadavgAfter = os.loadavg().map((x) => round(x));

    printTable(out);
    process.stdout.write(cvmBenchLines(out.cvmRelease as Parameters<typeof cvmBenchLines>[0]).join('\n') + '\n');
    process.stdout.write(cvmBenchLines(out.tdxCvmRelease as Parameters<typeof cvmBenchLines>[0]).join('\n') + '\n');
    const resultsDir = path.join(REPO, 'bench', 'results');
    fs.mkdirSync(resultsDir, { recursive: true });
    const file = path.join(resultsDir, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
    log(`results written to ${path.relative(REPO, file)}`);
  } finally {
    load.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function printTable(o: Record<string, unknown>): void {
  /* eslint-disable @typescript-eslint/no-explicit-any */
  const r = o as any;
  const ms = (x: number) => (Number.isFinite(x) ? `${round(x, 1)} ms` : 'n/a');
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const lines: string[] = [];
  const row = (...cols: (string | number)[]) => lines.push(cols.map((c, i) => String(c).padEnd(i === 0 ? 48 : 16)).join(''));
  lines.push(`skr-sidecar benchmark, ${r.when}, ${r.machine.cpus} x ${r.machine.cpu}, node ${r.machine.node}, load avg before ${r.machine.loadavgBefore.join(' ')}`);
  lines.push('');
  row('/attest/raw (closed loop)', 'sidecar req/s', 'floor req/s', 'ratio', '+device req/s', 'ratio', 'sidecar p50/p99', 'floor p50/p99', 'errors');
  for (const a of r.attestRaw.runs) {
    row(
      `  concurrency ${a.concurrency}`,
      round(a.sidecar.rps, 0),
      round(a.floor.rps, 0),
      a.throughputRatio,
      round(a.floorWithDevice.rps, 0),
      a.throughputRatioVsFloorWithDevice,
      `${round(a.sidecar.p50, 2)}/${round(a.sidecar.p99, 2)} ms`,
      `${round(a.floor.p50, 2)}/${round(a.floor.p99, 2)} ms`,
      a.sidecar.errors,
    );
  }
  lines.push('  floor: bare express route, same body parsing and answer size; +device: the same route also signing a simulated report');
  const c64 = r.attestRaw.runs.find((a: any) => a.concurrency === 64);
  lines.push(`  goal: ≥ 0.7 x floor at concurrency 64: ${c64.throughputRatio} → ${verdict(c64.throughputRatio >= 0.7)}`);
  lines.push('');
  const w = r.release.warm;
  const nr = r.release.warmWithoutTokenReuse;
  const cold = r.release.cold;
  /** min–max of the slices' p50s of an interleaved row. */
  const spread = (x: Stats) => (x.sliceP50s?.length ? `${round(Math.min(...x.sliceP50s), 1)}–${round(Math.max(...x.sliceP50s), 1)}` : '');
  row('/key/release (concurrency 1)', 'p50', 'p99', 'slice p50s, ms', 'vs floor p50');
  row('  floor: MAA + vault calls made directly', ms(w.floorMaaPlusVault.p50), ms(w.floorMaaPlusVault.p99), spread(w.floorMaaPlusVault), '1');
  row('  floor: vault call only', ms(w.floorVaultOnly.p50), ms(w.floorVaultOnly.p99), spread(w.floorVaultOnly), round(w.floorVaultOnly.p50 / w.floorMaaPlusVault.p50));
  row('  lower bound: minimal Node release', ms(w.minimalRelease.p50), ms(w.minimalRelease.p99), spread(w.minimalRelease), `${round(w.minimalRelease.p50 / w.floorMaaPlusVault.p50)} (${w.minimalP50VsVaultOnlyFloor} x vault-only)`);
  row('  the same behind express 5', ms(w.minimalExpress.p50), ms(w.minimalExpress.p99), spread(w.minimalExpress), `${round(w.minimalExpress.p50 / w.floorMaaPlusVault.p50)} (${w.minimalExpressP50VsVaultOnlyFloor} x vault-only)`);
  lines.push('  (lower bound: vault call + jose JWS verify + RSA-OAEP/AES-KWP unwrap behind a bare node:http server, minimal-release.ts)');
  row('  warm (MAA token reused)', ms(w.sidecar.p50), ms(w.sidecar.p99), spread(w.sidecar), `${w.p50VsFloor} (${w.p50VsVaultOnlyFloor} x vault-only, ${w.p50VsMinimal} x minimal)`);
  row('  warm, token reuse off (pool on)', ms(nr.sidecar.p50), ms(nr.sidecar.p99), spread(nr.sidecar), `${nr.p50VsFloor} (its floor ${ms(nr.floorMaaPlusVault.p50)})`);
  const cw = r.release.coldInWarmProcess;
  row(`  cold, new sidecar in a warm process (n=${cw.runs})`, ms(cw.p50), ms(cw.p99), '', cw.p50VsFloor);
  row(`  cold, fresh skr local process (n=${cold.runs})`, ms(cold.p50), ms(cold.p99), '', cold.p50VsFloor);
  lines.push('  (those cold rows: wrapping-key pool size 0, so the key is generated on the request path)');
  const cp = r.release.coldInWarmProcessPoolReady;
  row(`  first release, new sidecar, pool filled (n=${cp.runs})`, ms(cp.p50), ms(cp.p99), '', cp.p50VsFloor);
  lines.push(`  goal (issue 12): warm p50 ≤ 1.3 x vault-only: ${verdict(w.p50VsVaultOnlyFloor <= 1.3)} (${w.p50VsVaultOnlyFloor}; the minimal release itself: ${w.minimalP50VsVaultOnlyFloor})`);
  lines.push(`  goals: warm p50 ≤ 1.5 x floor: ${verdict(w.p50VsFloor <= 1.5)}; cold p50 ≤ 3 x floor: ${verdict(cw.p50VsFloor <= 3)} in a warm process, ${verdict(cold.p50VsFloor <= 3)} in a fresh one`);
  lines.push('');
  const u = r.unwrapKey;
  row('gRPC UnWrapKey (concurrency 1, RSA-HSM key)', 'p50', 'p99', 'slice p50s, ms', 'vs /key/release');
  row('  /key/release of the same key', ms(u.keyReleaseRsa.p50), ms(u.keyReleaseRsa.p99), spread(u.keyReleaseRsa), '1');
  row('  UnWrapKey (release + RSA-OAEP unwrap)', ms(u.unwrapKey.p50), ms(u.unwrapKey.p99), spread(u.unwrapKey), u.p50Ratio);
  lines.push(`  goal: UnWrapKey warm p50 ≤ 1.2 x /key/release warm p50: ${verdict(u.p50Ratio <= 1.2)} (${u.p50Ratio})`);
  lines.push(`  (its own RSA-3072 OAEP decryption with the fresh key: ${ms(u.rsa3072DecryptP50Ms)} here; without it ${u.p50RatioLessDecrypt} x)`);
  lines.push('');
  const s = r.release.sustained64;
  lines.push(`/key/release, concurrency 64 for ${r.settings.BENCH_SECONDS} s: ${s.requests} ok, ${s.errors} errors, ${round(s.rps, 0)} req/s, p50 ${ms(s.p50)}, p99 ${ms(s.p99)} (p99/p50 ${s.p99OverP50})`);
  lines.push(`  (vault call alone at concurrency 64: ${round(s.floorVaultOnly64.rps, 0)} req/s, p50 ${ms(s.floorVaultOnly64.p50)})`);
  lines.push(`  goals: zero errors: ${verdict(s.errors === 0)}; p99 ≤ 4 x p50: ${verdict(s.p99OverP50 <= 4)}`);
  if (s.errorSamples) lines.push(`  first error: ${s.errorSamples[0]}`);
  const c16 = r.release.concurrency16;
  lines.push(`/key/release, concurrency 16 (the sidecar's in-flight limit): ${c16.requests} ok, ${c16.errors} errors, ${round(c16.rps, 0)} req/s, p50 ${ms(c16.p50)}, p99 ${ms(c16.p99)} (p99/p50 ${c16.p99OverP50})`);
  lines.push('');
  const m = r.memory;
  const st = r.startup;
  lines.push(`memory: skr serve --simulate idle ${m.sidecarAloneIdleRssMb.join(', ')} MB; in-process stack (sidecar + 4 emulators + floor) idle ${m.inProcessStackIdleRssMb} MB, peak under load ${m.inProcessStackPeakRssUnderLoadMb} MB; fresh skr local process ${m.freshSkrLocalProcessRssAfterOneReleaseMb.join(', ')} MB`);
  lines.push(`start-up to /status ready: skr serve --simulate process ${st.sidecarAloneToReadyMs.map((x: number) => ms(x)).join(', ')}; in-process skr local ${ms(st.inProcessStartLocalStackToReadyMs)}; skr local process first start ${ms(st.skrLocalProcessFirstStartMs)} (creates CA and keys), later starts p50 ${ms(st.skrLocalProcessLaterStartsP50Ms)}`);
  lines.push(`  goals (sidecar alone): idle RSS ≤ 100 MB: ${verdict(Math.max(...m.sidecarAloneIdleRssMb) <= 100)}; start-up ≤ 1 s: ${verdict(st.sidecarAloneToReadyP50Ms <= 1000)}`);
  const img = r.imageNode;
  lines.push(
    img.idleRssMb
      ? `  on the image's Node.js ${img.node}: idle RSS ${img.idleRssMb.join(', ')} MB (≤ 100 MB: ${verdict(Math.max(...img.idleRssMb) <= 100)}); start-up ${img.toReadyMs.map((x: number) => ms(x)).join(', ')}`
      : `  on the image's Node.js: not measured (${img.unavailable})`,
  );
  process.stdout.write(lines.join('\n') + '\n');
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
