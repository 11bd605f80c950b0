/**
 * 10,000 random and mutated requests across every route of a real sidecar on loopback (keep-alive),
 * then /status must answer normally. No answer may be a 5xx, none may carry a stack trace, and each
 * must be the reference's JSON error shape. Upstream-facing routes are allowlisted to a closed port
 * only, so nothing a generator produces can leave the machine.
 */
import * as http from 'node:http';
import fc from 'fast-check';
import { loadServerConfig } from '../../src/server/config';
import type { RunningSidecar } from '../../src/server/sidecar';
import { startTestSidecar } from '../helpers/sidecar';
import { capturingLogger } from './log-capture';

const TOTAL = 10_000;
const CONCURRENCY = 16;

interface Req {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
}

const ROUTES = ['/status', '/metrics', '/attest/raw', '/attest/combined', '/attest/maa', '/key/release'];
const FIELDS = ['runtime_data', 'maa_endpoint', 'akv_endpoint', 'kid', 'access_token'];

const b64 = fc.uint8Array({ maxLength: 96 }).chain((b) => fc.constantFrom(Buffer.from(b).toString('base64'), Buffer.from(b).toString('base64url')));
const fieldValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  b64,
  fc.string(),
  fc.constantFrom('e30=', 'eyJrZXlzIjpbXX0=', 'x.attest.azure.net', 'v.vault.azure.net', 'http://x.attest.azure.net', 'https://127.0.0.1:1', '127.0.0.1:1', 'k/abc', '../../etc', '%%%', ''),
);
const bodyObject = fc.dictionary(fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 8 })), fieldValue, { maxKeys: 6 });

const body = fc.oneof(
  { weight: 6, arbitrary: bodyObject.map((o) => Buffer.from(JSON.stringify(o))) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => Buffer.from(JSON.stringify(v) ?? '')) },
  { weight: 2, arbitrary: fc.string({ maxLength: 200 }).map((s) => Buffer.from(s)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 5000 }).map((n) => Buffer.from(`{"runtime_data":${'['.repeat(n)}`)) },
  { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
);

const request: fc.Arbitrary<Req> = fc.record({
  method: fc.oneof({ weight: 6, arbitrary: fc.constant('POST') }, { weight: 2, arbitrary: fc.constant('GET') }, { weight: 1, arbitrary: fc.constantFrom('PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD') }),
  path: fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...ROUTES) },
    { weight: 1, arbitrary: fc.webPath() },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...ROUTES), fc.string({ maxLength: 12 })).map(([r, s]) => r + encodeURIComponent(s)) },
  ),
  headers: fc.record(
    {
      'content-type': fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16', 'garbage/e'),
      authorization: fc.constantFrom('Bearer x', 'Basic Zm9vOmJhcg==', ''),
      'content-encoding': fc.constantFrom('gzip', 'identity', 'br'),
    },
    { requiredKeys: [] },
  ),
  body,
});

function send(agent: http.Agent, base: URL, r: Req): Promise<{ status: number; text: string; type: string }> {
  const payload = r.method === 'GET' || r.method === 'HEAD' ? Buffer.alloc(0) : r.body;
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: base.hostname, port: base.port, method: r.method, path: r.path || '/', agent, timeout: 5000, headers: { ...r.headers, 'content-length': String(payload.length) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), type: String(res.headers['content-type'] ?? '') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', reject);
    req.end(payload);
  });
}

describe('10,000 malformed requests across every endpoint', () => {
  let sidecar: RunningSidecar;
  const { logger, lines } = capturingLogger('info');

  beforeAll(async () => {
    const config = loadServerConfig({ port: '0', simulate: true }, { SKR_ALLOWED_MAA: '127.0.0.1:1', SKR_ALLOWED_AKV: '127.0.0.1:1' });
    sidecar = await startTestSidecar({ config, logger } as Parameters<typeof startTestSidecar>[0]);
  });
  afterAll(() => sidecar.close());

  it('never answers 5xx or with a stack trace, and /status is normal afterwards', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const base = new URL(sidecar.url);
    const requests = fc.sample(request, { numRuns: TOTAL, seed: 60061 });
    const statuses = new Map<number, number>();
    const bad: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < requests.length) {
        const r = requests[next++];
        let res: { status: number; text: string; type: string };
        try {
          res = await send(agent, base, r);
        } catch (e) {
          bad.push(`${r.method} ${r.path}: transport error ${(e as Error).message}`);
          continue;
        }
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const stack = /\n\s+at |\.ts:\d+|node:internal/.test(res.text);
        const errorShape = res.status < 400 || r.method === 'HEAD' || /"error":"/.test(res.text);
        if (res.status >= 500 || stack || !errorShape) bad.push(`${r.method} ${r.path} ${r.body.subarray(0, 80).toString('latin1')} → ${res.status} ${res.text.slice(0, 200)}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    agent.destroy();

    expect(bad.slice(0, 5)).toEqual([]);
    const answered = [...statuses.values()].reduce((a, b) => a + b, 0);
    expect(answered).toBe(TOTAL);
    // The generators reach past validation: some requests succeed, most are refused as input errors.
    expect(statuses.get(200) ?? 0).toBeGreaterThan(100);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(1000);

    const status = await fetch(`${sidecar.url}/status`);
    expect(status.status).toBe(200);
    expect(((await status.json()) as { message: string }).message).toBe('Status OK');
    expect(lines.some((l) => l.includes('"level":"error"'))).toBe(false);
  }, 120_000);
});
