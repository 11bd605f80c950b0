/**
 * Endpoint and caller control, limits and metrics: the pure parts directly, the HTTP behaviour on a
 * real sidecar on loopback.
 */
import * as net from 'node:net';
import { EndpointAllowlist, KidAllowlist, DEFAULT_AKV_ALLOWLIST, DEFAULT_MAA_ALLOWLIST } from '../../src/server/allowlist';
import { loadServerConfig } from '../../src/server/config';
import { isLoopbackAddress, secretMatches } from '../../src/server/guard';
import { jsonDepthExceeds, OverloadedError, Semaphore } from '../../src/server/limits';
import { Counter, Histogram, Registry } from '../../src/server/metrics';
import { SkrError } from '../../src/common/errors';
import type { RunningSidecar } from '../../src/server/sidecar';
import { postJson, startTestSidecar } from '../helpers/sidecar';

describe('endpoint allowlists', () => {
  const maa = new EndpointAllowlist('maa', DEFAULT_MAA_ALLOWLIST);
  const akv = new EndpointAllowlist('akv', DEFAULT_AKV_ALLOWLIST);

  it.each([
    [maa, 'sharedeus.eus.attest.azure.net'],
    [maa, 'https://myattest.weu.attest.azure.net'],
    [maa, 'SHAREDUGV.UGV.ATTEST.AZURE.US'],
    [maa, 'x.attest.azure.net:443'],
    [akv, 'myvault.vault.azure.net'],
    [akv, 'myvault.vault.azure.cn'],
    [akv, 'myvault.vault.usgovcloudapi.net'],
    [akv, 'myhsm.managedhsm.azure.net'],
    [akv, 'myhsm.managedhsm.azure.cn'],
    [akv, 'myhsm.managedhsm.usgovcloudapi.net.'],
  ])('%#: default allows %s', (list, endpoint) => {
    expect(list.allows(endpoint)).toBe(true);
  });

  it.each([
    [maa, 'attest.azure.net'],
    [maa, 'x.attest.azure.net.evil.example'],
    [maa, 'x.attest.azure.net:8443'],
    [maa, 'xattest.azure.net'],
    [maa, '127.0.0.1'],
    [maa, 'http://x.attest.azure.net'],
    [akv, 'myvault.vault.azure.net@evil.example'],
    [akv, 'evilvault.azure.net'],
    [akv, 'myvault.vault.microsoftazure.de'],
    [akv, 'localhost:8443'],
    [akv, ''],
  ])('%#: default refuses %s', (list, endpoint) => {
    expect(list.allows(endpoint)).toBe(false);
  });

  it('host:port entries match exactly that port; the error names the endpoint and the setting', () => {
    const list = new EndpointAllowlist('akv', ['127.0.0.1:8443']);
    expect(list.allows('127.0.0.1:8443')).toBe(true);
    expect(list.allows('127.0.0.1:8444')).toBe(false);
    expect(() => list.check('127.0.0.1:8444')).toThrow(/akv_endpoint "127.0.0.1:8444" is not allowlisted; add 127\.0\.0\.1:8444 to SkrSideCarArgs\.allowlist\.akv or env SKR_ALLOWED_AKV/);
    try {
      list.check('127.0.0.1:8444');
    } catch (e) {
      expect(e).toBeInstanceOf(SkrError);
      expect((e as SkrError).status).toBe(403);
    }
    expect(() => list.check('http://127.0.0.1:8443')).toThrow(/only https endpoints are allowed/);
  });

  it.each(['http://x.example', '*', '*.com', 'a b', 'x.example:99999', '*.-bad.example'])('refuses the bad entry %s', (entry) => {
    expect(() => new EndpointAllowlist('maa', [entry])).toThrow(/maa allowlist/);
  });

  it('kid allowlist: a name allows its versions, name/version only that version', () => {
    const kids = new KidAllowlist(['app-key', 'other/0123abcd']);
    expect(() => kids.check('app-key')).not.toThrow();
    expect(() => kids.check('App-Key/ffff')).not.toThrow();
    expect(() => kids.check('other/0123ABCD')).not.toThrow();
    expect(() => kids.check('other')).toThrow(/kid "other" is not allowlisted.*SKR_ALLOWED_KIDS/);
    expect(() => kids.check('other/1')).toThrow(/not allowlisted/);
  });
});

describe('configuration', () => {
  it('env lists replace the defaults; SkrSideCarArgs.allowlist is used when env is unset', () => {
    const args = JSON.stringify({ allowlist: { maa: ['a.attest.azure.net'], akv: ['v.vault.azure.net:8443'], kid: ['k'] } });
    const fromArgs = loadServerConfig({ sidecarArgs: args }, {});
    expect([fromArgs.allowedMaa, fromArgs.allowedAkv, fromArgs.allowedKids]).toEqual([['a.attest.azure.net'], ['v.vault.azure.net:8443'], ['k']]);
    const fromEnv = loadServerConfig({ sidecarArgs: args }, { SKR_ALLOWED_MAA: 'b.attest.azure.net, c.attest.azure.net', SKR_ALLOWED_KIDS: 'x' });
    expect([fromEnv.allowedMaa, fromEnv.allowedKids]).toEqual([['b.attest.azure.net', 'c.attest.azure.net'], ['x']]);
    const none = loadServerConfig({}, {});
    expect(none.allowedMaa).toEqual(DEFAULT_MAA_ALLOWLIST);
    expect(none.allowedKids).toBeUndefined();
  });

  it.each([
    [{ SKR_ALLOWED_AKV: 'http://v.vault.azure.net' }, /only https/],
    [{ SkrSideCarArgs: '{"allowlist":{"maa":"x"}}' }, /allowlist\.maa must be an array of strings/],
    [{ SKR_API_SECRET: 'short' }, /at least 16 characters/],
    [{ SKR_REQUEST_DEADLINE_SECONDS: '0' }, /deadline/],
  ])('refuses %j', (env, msg) => {
    expect(() => loadServerConfig({}, env)).toThrow(msg);
  });
});

describe('caller checks and limits (pure)', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.5.6.7', true],
    ['::1', true],
    ['::ffff:127.0.0.1', true],
    ['10.0.0.1', false],
    ['::ffff:10.0.0.1', false],
    ['fe80::1', false],
    ['', false],
  ])('isLoopbackAddress(%s) = %s', (addr, want) => {
    expect(isLoopbackAddress(addr)).toBe(want);
  });

  it('secretMatches compares whole secrets', () => {
    expect(secretMatches('0123456789abcdef', '0123456789abcdef')).toBe(true);
    expect(secretMatches('0123456789abcdeF', '0123456789abcdef')).toBe(false);
    expect(secretMatches('0123456789abcde', '0123456789abcdef')).toBe(false);
  });

  it('Semaphore: holders up to capacity, then the queue, then 429', async () => {
    const s = new Semaphore(1, 1, 'things', 2);
    let release!: () => void;
    const first = s.run(() => new Promise<void>((r) => (release = r)));
    const second = s.run(async () => 'second');
    await expect(s.run(async () => 'third')).rejects.toMatchObject({ status: 429, retryAfterSeconds: 2 });
    expect([s.inUse, s.queued]).toEqual([1, 1]);
    release();
    await first;
    await expect(second).resolves.toBe('second');
    expect([s.inUse, s.queued]).toEqual([0, 0]);
    expect(new OverloadedError('x', 1)).toBeInstanceOf(SkrError);
  });

  it('Semaphore: a waiter whose deadline fires leaves the queue with the deadline error', async () => {
    const s = new Semaphore(1, 4, 'things');
    let release!: () => void;
    const first = s.run(() => new Promise<void>((r) => (release = r)));
    const ac = new AbortController();
    const waiting = s.run(async () => 'never', ac.signal);
    expect(s.queued).toBe(1);
    ac.abort(new Error('deadline'));
    await expect(waiting).rejects.toThrow('deadline');
    expect(s.queued).toBe(0);
    release();
    await first;
    expect(s.inUse).toBe(0);
  });

  it('jsonDepthExceeds ignores brackets in strings and handles a million open brackets', () => {
    expect(jsonDepthExceeds('{"a":"[[[[[[[[["}', 1)).toBe(false);
    expect(jsonDepthExceeds('{"a":"\\"[[["}', 1)).toBe(false);
    expect(jsonDepthExceeds('[[[]]]', 2)).toBe(true);
    expect(jsonDepthExceeds('['.repeat(1_000_000), 32)).toBe(true);
  });

  it('metrics render in Prometheus text format with escaped labels', () => {
    const r = new Registry();
    const c = r.register(new Counter('t_total', 'help'));
    const h = r.register(new Histogram('t_seconds', 'help', [0.1, 1]));
    c.inc({ route: 'a"b\\c\nd' }, 2);
    h.observe({ s: 'x' }, 0.5);
    expect(r.render()).toBe(
      [
        '# HELP t_total help',
        '# TYPE t_total counter',
        't_total{route="a\\"b\\\\c\\nd"} 2',
        '# HELP t_seconds help',
        '# TYPE t_seconds histogram',
        't_seconds_bucket{s="x",le="0.1"} 0',
        't_seconds_bucket{s="x",le="1"} 1',
        't_seconds_bucket{s="x",le="+Inf"} 1',
        't_seconds_sum{s="x"} 0.5',
        't_seconds_count{s="x"} 1',
        '',
      ].join('\n'),
    );
    expect(() => r.register(new Counter('t_total', 'again'))).toThrow(/twice/);
  });
});

describe('the sidecar with a caller secret, a kid allowlist and one release slot', () => {
  const SECRET = 'correct-horse-battery-staple';
  let sidecar: RunningSidecar;
  let hang: net.Server;
  let hangEndpoint: string;
  const hangSockets = new Set<net.Socket>();

  beforeAll(async () => {
    // Accepts TCP and never answers: an MAA that hangs in the TLS handshake. Its sockets are
    // destroyed at the end: left open, they kept the jest worker from exiting.
    hang = net.createServer((sock) => hangSockets.add(sock.on('close', () => hangSockets.delete(sock))));
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    hangEndpoint = `127.0.0.1:${(hang.address() as net.AddressInfo).port}`;
    const base = loadServerConfig({ port: '0', simulate: true, requestDeadline: '1' }, { SKR_API_SECRET: SECRET, SKR_ALLOWED_MAA: hangEndpoint, SKR_ALLOWED_AKV: '127.0.0.1:1', SKR_ALLOWED_KIDS: 'allowed-key' });
    sidecar = await startTestSidecar({ config: { ...base, limits: { ...base.limits, maxInFlightReleases: 1, maxQueuedReleases: 0 } } } as Parameters<typeof startTestSidecar>[0]);
  });
  afterAll(async () => {
    await sidecar.close();
    for (const sock of hangSockets) sock.destroy();
    await new Promise((r) => hang.close(r));
  });

  const auth = { authorization: `Bearer ${SECRET}` };
  const metrics = async () => (await fetch(`${sidecar.url}/metrics`, { headers: auth })).text();
  /** The value of one sample in the Prometheus text, 0 when absent. */
  const sample = (text: string, series: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line ? Number(line.slice(series.length + 1)) : 0;
  };
  /** Poll /metrics until `series` reads `want`: observable state instead of a sleep. */
  async function untilSample(series: string, want: number): Promise<void> {
    for (let i = 0; i < 500; i++) {
      if (sample(await metrics(), series) === want) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`${series} never reached ${want}`);
  }
  const raw = { runtime_data: Buffer.from('hello').toString('base64') };

  it('/status stays open; everything else needs the bearer secret', async () => {
    expect((await fetch(`${sidecar.url}/status`)).status).toBe(200);
    const none = await postJson(`${sidecar.url}/attest/raw`, raw);
    expect(none.status).toBe(401);
    expect(none.json.error).toMatch(/Authorization: Bearer/);
    expect((await postJson(`${sidecar.url}/attest/raw`, raw, { authorization: 'Bearer wrong-secret-wrong-secret' })).status).toBe(401);
    expect((await fetch(`${sidecar.url}/metrics`)).status).toBe(401);
    expect((await postJson(`${sidecar.url}/attest/raw`, raw, auth)).status).toBe(200);
  });

  it('refuses a kid outside the allowlist with 403 before any upstream call', async () => {
    const res = await postJson(`${sidecar.url}/key/release`, { maa_endpoint: hangEndpoint, akv_endpoint: '127.0.0.1:1', kid: 'other-key' }, auth);
    expect(res.status).toBe(403);
    expect(res.json.error).toMatch(/kid "other-key" is not allowlisted/);
  });

  it('refuses JSON nested deeper than the limit with 400', async () => {
    const res = await postJson(`${sidecar.url}/attest/raw`, `{"runtime_data":"aGk=","x":${'['.repeat(40)}${']'.repeat(40)}}`, auth);
    expect(res.status).toBe(400);
    expect(res.json.error).toMatch(/nests deeper than 32 levels/);
  });

  it('a second release while the only slot is busy gets 429 with Retry-After; the first ends at the deadline with 504', async () => {
    const before = await metrics();
    const body = { maa_endpoint: hangEndpoint, runtime_data: Buffer.from('{}').toString('base64') };
    const first = postJson(`${sidecar.url}/attest/maa`, body, auth);
    // The first request holds the only slot once the gauge says so.
    await untilSample('skr_in_flight{what="releases"}', 1);
    const second = await fetch(`${sidecar.url}/key/release`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: JSON.stringify({ maa_endpoint: hangEndpoint, akv_endpoint: '127.0.0.1:1', kid: 'allowed-key' }),
    });
    expect(second.status).toBe(429);
    expect(second.headers.get('retry-after')).toBe('1');
    expect(((await second.json()) as { error: string }).error).toMatch(/too many key releases/);
    const done = await first;
    expect(done.status).toBe(504);
    expect(done.json.error).toMatch(/deadline of 1 s exceeded/);
    const overloaded = 'skr_http_requests_total{outcome="overloaded",route="POST /key/release",status="429"}';
    const after = await metrics();
    expect(sample(after, overloaded) - sample(before, overloaded)).toBe(1);
    expect(sample(after, 'skr_in_flight{what="releases"}')).toBe(0);
  });

  it('counts refused callers in skr_refused_requests_total{reason="auth"}', async () => {
    const series = 'skr_refused_requests_total{reason="auth"}';
    const before = sample(await metrics(), series);
    expect((await postJson(`${sidecar.url}/attest/raw`, raw)).status).toBe(401);
    expect((await postJson(`${sidecar.url}/attest/raw`, raw, { authorization: 'Bearer wrong-secret-wrong-secret' })).status).toBe(401);
    expect(sample(await metrics(), series) - before).toBe(2);
  });
});
