/**
 * DNS rebinding and browser requests: the sidecar and every emulator serve only requests whose one
 * Host header names loopback (or a configured name) and that carry no Origin (unless configured).
 * Requests are sent with node's http module, which, unlike fetch, lets a test set Host and Origin.
 * curl and the reference test clients keep working: they are run against the same sidecar.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { checkHostAndOrigin, hostGuardPolicy, hostOfHeader } from '../../src/common/host-guard';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { startImdsEmulator, type ImdsEmulator } from '../../src/emulators/imds';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { startVaultEmulator, type VaultEmulator } from '../../src/emulators/akv';
import { loadServerConfig } from '../../src/server/config';
import type { RunningSidecar } from '../../src/server/sidecar';
import { startTestSidecar } from '../helpers/sidecar';

const execFileP = promisify(execFile);
const REPO = path.resolve(__dirname, '..', '..');

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request with exactly the headers given (Host included), on a fresh connection. */
function request(url: string, opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string; ca?: string } = {}): Promise<Answer> {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(
      {
        host: u.hostname,
        port: u.port,
        method: opts.method ?? 'GET',
        path: opts.path ?? '/',
        headers: opts.headers ?? {},
        agent: false,
        // The chain is still checked; the name is not (a test Host header must not become the TLS name).
        ...(opts.ca ? { ca: opts.ca, checkServerIdentity: () => undefined } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Bytes on a plain socket, for what node's client refuses to send (no Host, two Hosts, absolute-form). */
function rawExchange(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.end(head));
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => (out += c));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

const runtime = Buffer.from('{"purpose":"host-guard"}').toString('base64');

describe('host guard (pure)', () => {
  const policy = hostGuardPolicy({ allowedHosts: ['Sidecar.Internal', '[fd00::1]'], allowedOrigins: ['https://app.example:443/', 'http://localhost:3000'] });
  const req = (headers: string[], url = '/status') => ({ rawHeaders: headers, url });

  it.each([
    ['localhost:8080'],
    ['LOCALHOST'],
    ['127.0.0.1'],
    ['127.0.0.1:1'],
    ['[::1]:8080'],
    ['[::1]'],
    ['sidecar.internal:8080'],
    ['[fd00::1]:9'],
  ])('serves Host %s without Origin', (host) => {
    expect(checkHostAndOrigin(req(['Host', host]), policy)).toBeUndefined();
  });

  it.each([
    ['evil.example:8080'],
    ['localhost.:8080'],
    ['127.0.0.2:8080'],
    ['0.0.0.0:8080'],
    ['[::ffff:127.0.0.1]:8080'],
    ['localhost:99999'],
    ['localhost:'],
    ['localhost:8080:1'],
    ['sidecar.internal.evil.example'],
    [''],
  ])('refuses Host %j with a message naming SKR_ALLOWED_HOSTS', (host) => {
    const r = checkHostAndOrigin(req(['Host', host]), policy);
    expect(r).toMatchObject({ reason: 'host', code: 'ERR_HOST_NOT_ALLOWED' });
    expect(r?.message).toMatch(/SKR_ALLOWED_HOSTS/);
  });

  it('refuses no Host, two Hosts and absolute-form targets', () => {
    expect(checkHostAndOrigin(req([]), policy)?.message).toMatch(/exactly one Host header \(got 0\)/);
    expect(checkHostAndOrigin(req(['Host', 'localhost', 'host', 'evil.example']), policy)?.message).toMatch(/got 2/);
    expect(checkHostAndOrigin(req(['Host', 'localhost'], 'http://evil.example/status'), policy)?.message).toMatch(/absolute-form/);
  });

  it('refuses any Origin but the configured ones, compared as canonical origins', () => {
    const at = (origin: string[]) => checkHostAndOrigin(req(['Host', 'localhost:8080', ...origin]), policy);
    expect(at(['Origin', 'https://app.example'])).toBeUndefined();
    expect(at(['Origin', 'http://localhost:3000'])).toBeUndefined();
    for (const o of ['http://app.example', 'https://app.example:8443', 'http://localhost:3001', 'null', '', 'https://app.example/x']) {
      expect(at(['Origin', o])).toMatchObject({ reason: 'origin', code: 'ERR_ORIGIN_NOT_ALLOWED' });
    }
    expect(at(['Origin', 'https://app.example', 'Origin', 'https://app.example'])?.message).toMatch(/at most one Origin/);
    expect(checkHostAndOrigin(req(['Host', 'localhost', 'Origin', 'http://evil.example']), hostGuardPolicy())?.message).toMatch(
      /requests from browsers are refused: Origin "http:\/\/evil.example" is not in SKR_ALLOWED_ORIGINS/,
    );
  });

  it('cuts a long Host in its message', () => {
    const r = checkHostAndOrigin(req(['Host', 'a'.repeat(5000)]), policy);
    expect(r?.message.length).toBeLessThan(400);
    expect(r?.message).toMatch(/… \(cut\)/);
  });

  it('parses Host values', () => {
    expect(hostOfHeader('[::1]:80')).toBe('[::1]');
    expect(hostOfHeader('Example.COM')).toBe('example.com');
    expect(hostOfHeader('a:b')).toBeUndefined();
  });

  it.each([
    [{ SKR_ALLOWED_HOSTS: 'http://x.example' }, /allowed hosts: "http:\/\/x.example" is not a host name/],
    [{ SKR_ALLOWED_HOSTS: 'x.example:8080' }, /not a host name/],
    [{ SKR_ALLOWED_HOSTS: '*.example' }, /not a host name/],
    [{ SKR_ALLOWED_ORIGINS: 'null' }, /"null" cannot be allowed/],
    [{ SKR_ALLOWED_ORIGINS: 'https://app.example/path' }, /without path/],
    [{ SKR_ALLOWED_ORIGINS: 'ftp://app.example' }, /only http and https/],
    [{ SkrSideCarArgs: '{"allowlist":{"hosts":"x"}}' }, /allowlist\.hosts must be an array of strings/],
  ])('configuration refuses %j', (env, msg) => {
    expect(() => loadServerConfig({}, env)).toThrow(msg);
  });

  it('configuration: env wins over SkrSideCarArgs.allowlist.hosts / origins', () => {
    const args = JSON.stringify({ allowlist: { hosts: ['a.internal'], origins: ['http://localhost:3000'] } });
    const fromArgs = loadServerConfig({ sidecarArgs: args }, {});
    expect([fromArgs.allowedHosts, fromArgs.allowedOrigins]).toEqual([['a.internal'], ['http://localhost:3000']]);
    const fromEnv = loadServerConfig({ sidecarArgs: args }, { SKR_ALLOWED_HOSTS: 'b.internal' });
    expect(fromEnv.allowedHosts).toEqual(['b.internal']);
    expect(loadServerConfig({}, {}).allowedHosts).toBeUndefined();
  });
});

describe('the sidecar refuses foreign Host and Origin headers', () => {
  let sidecar: RunningSidecar;
  let configured: RunningSidecar;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-host-guard-'));

  beforeAll(async () => {
    sidecar = await startTestSidecar({ securityContextDir: path.join(tmp, 'ctx-default') });
    const base = loadServerConfig({ port: '0', simulate: true }, { SKR_ALLOWED_HOSTS: 'sidecar.internal', SKR_ALLOWED_ORIGINS: 'http://localhost:3000' });
    configured = await startTestSidecar({ config: base, securityContextDir: path.join(tmp, 'ctx-configured') });
  });
  afterAll(async () => {
    await sidecar.close();
    await configured.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const metrics = async (s: RunningSidecar) => (await request(s.url, { path: '/metrics', headers: { host: `127.0.0.1:${s.port}` } })).body;

  it('a rebound page (Host: its own name) gets 403 for a key release, before any work; the connection is closed', async () => {
    const res = await request(sidecar.url, {
      method: 'POST',
      path: '/key/release',
      // What a browser sends for fetch(..., {method: "POST", body}) after rebinding: a simple request, no preflight.
      headers: { host: `rebind.evil.example:${sidecar.port}`, 'content-type': 'text/plain;charset=UTF-8' },
      body: JSON.stringify({ maa_endpoint: 'x.attest.azure.net', akv_endpoint: 'v.vault.azure.net', kid: 'k' }),
    });
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body).error).toBe(
      `Host "rebind.evil.example:${sidecar.port}" is refused: only localhost, 127.0.0.1, [::1] or a name in SKR_ALLOWED_HOSTS (or SkrSideCarArgs.allowlist.hosts) are served (a browser sends its page's name after DNS rebinding)`,
    );
    expect(res.headers.connection).toBe('close');
    const m = await metrics(sidecar);
    expect(m).toMatch(/^skr_refused_requests_total\{reason="host"\} [1-9]/m);
    expect(m).not.toMatch(/skr_key_releases_total\{/);
  });

  it.each(['/status', '/metrics', '/attest/raw'])('Host evil.example is refused on %s too', async (p) => {
    const res = await request(sidecar.url, { method: p === '/attest/raw' ? 'POST' : 'GET', path: p, headers: { host: 'evil.example' }, body: p === '/attest/raw' ? `{"runtime_data":"${runtime}"}` : undefined });
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body).error).toMatch(/Host "evil.example" is refused/);
  });

  it('a page calling http://127.0.0.1 directly (Origin set, text/plain body) gets 403 naming SKR_ALLOWED_ORIGINS', async () => {
    for (const origin of ['http://evil.example', 'null', `http://localhost:${sidecar.port}`]) {
      const res = await request(sidecar.url, {
        method: 'POST',
        path: '/attest/raw',
        headers: { host: `127.0.0.1:${sidecar.port}`, origin, 'content-type': 'text/plain' },
        body: `{"runtime_data":"${runtime}"}`,
      });
      expect(res.status).toBe(403);
      expect(JSON.parse(res.body).error).toMatch(/requests from browsers are refused: Origin ".*" is not in SKR_ALLOWED_ORIGINS/);
    }
    expect(await metrics(sidecar)).toMatch(/^skr_refused_requests_total\{reason="origin"\} [1-9]/m);
  });

  it.each(['localhost', 'LocalHost', '127.0.0.1', '[::1]'])('serves Host %s with and without a port', async (name) => {
    for (const host of [name, `${name}:${sidecar.port}`]) {
      const res = await request(sidecar.url, { path: '/status', headers: { host } });
      expect(res.status).toBe(200);
    }
  });

  it('refuses a request without Host, with two, and an absolute-form target', async () => {
    const noHost = await rawExchange(sidecar.port, 'GET /status HTTP/1.0\r\n\r\n');
    expect(noHost).toMatch(/^HTTP\/1\.1 403 /);
    expect(noHost).toMatch(/exactly one Host header \(got 0\)/);
    const twoHosts = await rawExchange(sidecar.port, 'GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n');
    expect(twoHosts).toMatch(/^HTTP\/1\.1 403 [\s\S]*got 2/);
    const absolute = await rawExchange(sidecar.port, 'GET http://evil.example/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    expect(absolute).toMatch(/^HTTP\/1\.1 403 [\s\S]*absolute-form/);
  });

  it('serves configured names and origins, and still refuses others', async () => {
    const named = await request(configured.url, { path: '/status', headers: { host: `sidecar.internal:${configured.port}` } });
    expect(named.status).toBe(200);
    const allowed = await request(configured.url, {
      method: 'POST',
      path: '/attest/raw',
      headers: { host: `localhost:${configured.port}`, origin: 'http://localhost:3000', 'content-type': 'application/json' },
      body: `{"runtime_data":"${runtime}"}`,
    });
    expect(allowed.status).toBe(200);
    expect(JSON.parse(allowed.body).report).toMatch(/^[0-9a-f]+$/);
    const other = await request(configured.url, { path: '/status', headers: { host: 'localhost', origin: 'http://localhost:3001' } });
    expect(other.status).toBe(403);
    expect((await request(configured.url, { path: '/status', headers: { host: 'other.internal' } })).status).toBe(403);
  });

  it('curl keeps working, by name and by address', async () => {
    for (const base of [`http://localhost:${sidecar.port}`, sidecar.url]) {
      const { stdout } = await execFileP('curl', ['-sS', '-w', '\\n%{http_code}', '-X', 'POST', '-H', 'Content-Type: application/json', '-d', `{"runtime_data":"${runtime}"}`, `${base}/attest/raw`]);
      const [body, code] = stdout.trim().split('\n');
      expect(code).toBe('200');
      expect(JSON.parse(body).report).toMatch(/^[0-9a-f]{2368}$/);
    }
  });

  it('the reference test client (attest_client.sh) keeps working against http://localhost:<port>', async () => {
    const out = path.join(tmp, 'attest');
    fs.mkdirSync(out);
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', AttestClientRuntimeData: runtime, SKR_SIDECAR_URL: `http://localhost:${sidecar.port}`, SKR_OUT_DIR: out, SKR_CLIENT_ITERATIONS: '1' };
    const { stdout } = await execFileP('sh', [path.join(REPO, 'docker', 'tests', 'attest_client.sh')], { env });
    expect(stdout).toMatch(/POST \/attest\/raw -> HTTP 200/);
    expect(stdout).toMatch(/POST \/attest\/combined -> HTTP 200/);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'raw.out'), 'utf8')).report).toMatch(/^[0-9a-f]{2368}$/);
  });
});

describe('every emulator refuses foreign Host and Origin headers', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-host-guard-emu-'));
  const ca = loadOrCreateLocalCa(dir);
  let imds: ImdsEmulator;
  let maa: MaaEmulator;
  let vault: VaultEmulator;
  let hsm: VaultEmulator;
  let namedMaa: MaaEmulator;

  beforeAll(async () => {
    imds = await startImdsEmulator({ stateDir: path.join(dir, 'imds') });
    maa = await startMaaEmulator({ ca });
    namedMaa = await startMaaEmulator({ ca, hostGuard: { allowedHosts: ['maa.internal'], allowedOrigins: ['https://portal.internal'] } });
    const accessTokens = { publicKey: imds.publicKey, issuer: imds.issuer };
    vault = await startVaultEmulator({ flavour: 'vault', ca, stateDir: path.join(dir, 'vault'), accessTokens });
    hsm = await startVaultEmulator({ flavour: 'hsm', ca, stateDir: path.join(dir, 'hsm'), accessTokens });
  });
  afterAll(async () => {
    for (const e of [imds, maa, namedMaa, vault, hsm]) await e.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const targets = (): Array<{ name: string; url: string; path: string; headers: Record<string, string>; ok: number }> => [
    { name: 'IMDS', url: imds.url, path: '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net', headers: { metadata: 'true' }, ok: 200 },
    { name: 'MAA', url: maa.url, path: '/certs', headers: {}, ok: 200 },
    // No bearer token: the vault's own answer is its 401 challenge, not the guard's 403.
    { name: 'Key Vault', url: vault.url, path: '/keys/k?api-version=7.4', headers: {}, ok: 401 },
    { name: 'Managed HSM', url: hsm.url, path: '/keys/k?api-version=7.4', headers: {}, ok: 401 },
  ];
  const errorText = (body: string) => {
    const j = JSON.parse(body) as { error: string | { code: string; message: string }; error_description?: string };
    return typeof j.error === 'string' ? `${j.error}: ${j.error_description}` : `${j.error.code}: ${j.error.message}`;
  };

  it('loopback Host without Origin reaches the emulated service', async () => {
    for (const t of targets()) {
      const port = new URL(t.url).port;
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`]) {
        const res = await request(t.url, { path: t.path, headers: { ...t.headers, host }, ca: ca.certPem });
        expect([t.name, res.status]).toEqual([t.name, t.ok]);
      }
    }
  });

  it('a foreign Host gets 403 in the service\'s error shape, fault admin route included', async () => {
    for (const t of targets()) {
      for (const p of [t.path, '/_emulator/faults']) {
        const res = await request(t.url, { path: p, headers: { ...t.headers, host: 'rebind.evil.example' }, ca: ca.certPem });
        expect([t.name, p, res.status]).toEqual([t.name, p, 403]);
        expect(errorText(res.body)).toMatch(/^ERR_HOST_NOT_ALLOWED: Host "rebind.evil.example" is refused/);
        expect(res.headers.connection).toBe('close');
      }
    }
  });

  it('a request with an Origin gets 403, even a POST with a text/plain body', async () => {
    for (const t of targets()) {
      const port = new URL(t.url).port;
      const res = await request(t.url, {
        method: 'POST',
        path: '/_emulator/faults',
        headers: { host: `127.0.0.1:${port}`, origin: 'https://evil.example', 'content-type': 'text/plain' },
        body: JSON.stringify({ route: '*', kind: 'hang' }),
        ca: ca.certPem,
      });
      expect([t.name, res.status]).toEqual([t.name, 403]);
      expect(errorText(res.body)).toMatch(/^ERR_ORIGIN_NOT_ALLOWED: requests from browsers are refused/);
    }
    // Nothing was armed: the services still answer normally.
    expect((await request(maa.url, { path: '/certs', headers: { host: 'localhost' }, ca: ca.certPem })).status).toBe(200);
  });

  it('serves names and origins given in its hostGuard option', async () => {
    const ok = await request(namedMaa.url, { path: '/certs', headers: { host: 'maa.internal', origin: 'https://portal.internal' }, ca: ca.certPem });
    expect(ok.status).toBe(200);
    expect((await request(namedMaa.url, { path: '/certs', headers: { host: 'maa.internal', origin: 'https://other.internal' }, ca: ca.certPem })).status).toBe(403);
    await expect(startMaaEmulator({ ca, hostGuard: { allowedHosts: ['http://x'] } })).rejects.toThrow(/not a host name/);
  });
});
