/**
 * Endpoint names and connections (issue 10 items 1 and 5): endpoint names that are not DNS names
 * are refused (400 naming the field) before any allowlist; 1 MB fields get short 400s; concurrent
 * connections are capped (SKR_MAX_CONNECTIONS) and idle keep-alive sockets close well before the
 * headers timeout.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { dnsNameProblem } from '../../src/common/dns-name';
import { parseEndpoint } from '../../src/common/endpoint';
import { EndpointAllowlist } from '../../src/server/allowlist';
import { ConfigError } from '../../src/common/errors';
import { DEFAULT_LIMITS, loadServerConfig } from '../../src/server/config';
import type { RunningSidecar } from '../../src/server/sidecar';
import { postJson, startTestSidecar } from '../helpers/sidecar';

describe('DNS names', () => {
  it.each(['myvault.vault.azure.net', 'MyVault.Vault.Azure.Net.', '127.0.0.1', '[::1]', 'a-b.c'])('accepts %s', (h) => {
    expect(dnsNameProblem(h)).toBeUndefined();
  });
  it.each(['', '*.vault.azure.net', '.x.vault.azure.net', 'a..vault.azure.net', `${'a'.repeat(64)}.vault.azure.net`, `${'a.'.repeat(127)}net`, '-x.vault.azure.net', 'x_y.vault.azure.net'])(
    'refuses %j',
    (h) => {
      expect(dnsNameProblem(h)).toEqual(expect.any(String));
    },
  );
});

describe('parseEndpoint: no Endpoint value holds a name that is not a DNS name', () => {
  it.each([
    ['akv', '*.vault.azure.net', 'akv_endpoint'],
    ['akv', 'https://.x.vault.azure.net:8443', 'akv_endpoint'],
    ['akv', `${'a'.repeat(64)}.vault.azure.net`, 'akv_endpoint'],
    ['maa', 'a..attest.azure.net', 'maa_endpoint'],
    ['maa', 'x_y.attest.azure.net', 'maa_endpoint'],
  ] as const)('%s %j: ERR_ENDPOINT_NAME naming %s, and no allowlist approves it', (kind, raw, field) => {
    expect(() => parseEndpoint(kind, raw)).toThrow(expect.objectContaining({ code: 'ERR_ENDPOINT_NAME', message: expect.stringContaining(field) }));
    expect(new EndpointAllowlist(kind, [kind === 'akv' ? '*.vault.azure.net' : '*.attest.azure.net']).allows(raw)).toBe(false);
  });
  it('a 1 MB endpoint is refused by its length, with a short message', () => {
    expect(() => parseEndpoint('akv', 'a'.repeat(1_000_000))).toThrow(/^akv_endpoint is longer than 300 characters$/);
  });
  it('valid names still parse to the host that is dialled', () => {
    expect(parseEndpoint('akv', 'MyVault.Vault.Azure.Net.').origin).toBe('https://myvault.vault.azure.net');
    expect(parseEndpoint('maa', 'https://[::1]:8443').host).toBe('[::1]:8443');
  });
});

describe('SKR_MAX_CONNECTIONS', () => {
  it('defaults to the low thousands and is read from the environment', () => {
    expect(loadServerConfig({}, {}).limits.maxConnections).toBe(DEFAULT_LIMITS.maxConnections);
    expect(DEFAULT_LIMITS.maxConnections).toBeGreaterThanOrEqual(1000);
    expect(DEFAULT_LIMITS.maxConnections).toBeLessThan(10_000);
    expect(loadServerConfig({}, { SKR_MAX_CONNECTIONS: '100' }).limits.maxConnections).toBe(100);
    expect(() => loadServerConfig({}, { SKR_MAX_CONNECTIONS: 'lots' })).toThrow(ConfigError);
  });
  it('closes idle keep-alive sockets well before the headers timeout', () => {
    expect(DEFAULT_LIMITS.keepAliveTimeoutMs * 4).toBeLessThanOrEqual(DEFAULT_LIMITS.headersTimeoutMs);
  });
});

describe('a real sidecar', () => {
  let sidecar: RunningSidecar;
  const ctx = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-names-'));
  beforeAll(async () => {
    const base = loadServerConfig({ port: '0', simulate: true }, {});
    const limits = { ...base.limits, maxConnections: 3, keepAliveTimeoutMs: 200 };
    sidecar = await startTestSidecar({ config: { ...base, limits }, securityContextDir: ctx } as Parameters<typeof startTestSidecar>[0]);
  });
  afterAll(async () => {
    await sidecar.close();
    fs.rmSync(ctx, { recursive: true, force: true });
  });

  const release = (extra: Record<string, unknown>) =>
    postJson(`${sidecar.url}/key/release`, { maa_endpoint: 'x.attest.azure.net', akv_endpoint: 'v.vault.azure.net', kid: 'k', ...extra });

  it.each([
    ['akv_endpoint', '*.vault.azure.net'],
    ['akv_endpoint', '.x.vault.azure.net'],
    ['akv_endpoint', 'a..vault.azure.net'],
    ['akv_endpoint', `${'a'.repeat(64)}.vault.azure.net`],
    ['maa_endpoint', '*.attest.azure.net'],
    ['maa_endpoint', 'https://.x.attest.azure.net'],
  ])('%s %s: 400 naming the field, before the allowlist', async (field, value) => {
    const res = await release({ [field]: value });
    expect(res.status).toBe(400);
    expect(String(res.json.error)).toContain(field);
  });

  it('/attest/maa refuses a wildcard maa_endpoint with 400', async () => {
    const res = await postJson(`${sidecar.url}/attest/maa`, { maa_endpoint: '*.attest.azure.net', runtime_data: Buffer.from('{}').toString('base64') });
    expect(res.status).toBe(400);
    expect(String(res.json.error)).toContain('maa_endpoint');
  });

  it.each(['kid', 'akv_endpoint', 'maa_endpoint'])('a 1 MB %s gets a 400 with a short message', async (field) => {
    // 1 MB (decimal): the field plus the rest of the body stays under the 1 MiB body limit.
    const res = await release({ [field]: 'a'.repeat(1_000_000) });
    expect(res.status).toBe(400);
    expect(String(res.json.error)).toContain(field);
    expect(String(res.json.error).length).toBeLessThan(200);
  });

  /** Connect and send GET /status; resolves with the status line, or `closed` when the server drops the socket. */
  function statusOn(sock: net.Socket): Promise<string> {
    return new Promise((resolve) => {
      let data = '';
      sock.on('data', (d: Buffer) => {
        data += d.toString();
        if (data.includes('\r\n')) resolve(data.split('\r\n')[0]);
      });
      sock.on('close', () => resolve(data ? data.split('\r\n')[0] : 'closed'));
      sock.on('error', () => undefined);
      sock.write('GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    });
  }
  const connect = () =>
    new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(sidecar.port, '127.0.0.1', () => resolve(s));
      s.once('error', reject);
    });

  it('drops connections beyond SKR_MAX_CONNECTIONS, and serves the ones it holds', async () => {
    const held = [await connect(), await connect(), await connect()];
    // Let the server account for the three before the fourth arrives.
    await new Promise((r) => setImmediate(r));
    const extra = await connect();
    try {
      expect(await statusOn(extra)).toBe('closed');
      expect(await statusOn(held[0])).toBe('HTTP/1.1 200 OK');
    } finally {
      for (const s of [...held, extra]) s.destroy();
    }
  });

  it('closes an idle keep-alive socket by itself', async () => {
    // Wait until the sockets of the previous test are gone from the server's count.
    while ((await new Promise<number>((r) => sidecar.server?.getConnections((_e, n) => r(n)))) > 0) await new Promise((r) => setTimeout(r, 20));
    const s = await connect();
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    expect(await statusOn(s)).toBe('HTTP/1.1 200 OK');
    await closed;
    expect(sidecar.server?.keepAliveTimeout).toBe(200);
  });
});
