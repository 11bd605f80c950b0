import * as fs from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { loadOrCreateLocalCa, loopbackServerTls } from '../../src/emulators/ca';

describe('https fetch with the local CA', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-ca-'));
  const ca = loadOrCreateLocalCa(dir);
  let server: https.Server;
  let url: string;
  let connections = 0;
  beforeAll(async () => {
    server = https.createServer(loopbackServerTls(ca), (req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.setHeader('x-test', 'a');
        res.end(JSON.stringify({ method: req.method, body, auth: req.headers.authorization ?? null }));
      });
    });
    server.on('secureConnection', () => connections++);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/x`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps the CA across loads and protects its key', () => {
    const again = loadOrCreateLocalCa(dir);
    expect(again.certPem).toBe(ca.certPem);
    expect(fs.statSync(path.join(dir, 'ca-key.pem')).mode & 0o077).toBe(0);
  });

  it('trusts the extra CA, sends bodies and headers, and reuses the connection', async () => {
    const f = createHttpsFetch({ extraCaPem: [ca.certPem] });
    try {
      for (let i = 0; i < 3; i++) {
        const res = await f(url, { method: 'POST', body: 'hi', headers: { authorization: 'Bearer t' } });
        expect(res.status).toBe(200);
        expect(res.headers.get('x-test')).toBe('a');
        expect(await res.json()).toEqual({ method: 'POST', body: 'hi', auth: 'Bearer t' });
      }
      expect(connections).toBe(1);
    } finally {
      f.destroy();
    }
  });

  it('refuses the server without the CA', async () => {
    const f = createHttpsFetch();
    try {
      await expect(f(url)).rejects.toThrow(/self-signed|unable to verify|local issuer/i);
    } finally {
      f.destroy();
    }
  });

  it('honours an abort signal', async () => {
    const f = createHttpsFetch({ extraCaPem: [ca.certPem] });
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(f(url, { signal: ac.signal })).rejects.toThrow('stop');
    f.destroy();
  });
});
