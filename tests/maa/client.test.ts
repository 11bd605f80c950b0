import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AttemptInfo } from '../../src/common/http';
import { UpstreamError } from '../../src/common/errors';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { MaaClient, maaBaseUrl } from '../../src/maa/client';
import { MaaRefusedError } from '../../src/maa/errors';
import { parseSevSnpVmRequest } from '../../src/maa/request';
import { closedPort, startLoopback, trustingFetch, type Loopback } from './loopback';
import { RUNTIME_JSON, simulatedInput } from './fixtures';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ0ZXN0In0.c2lnbmF0dXJlLWJ5dGVz';
const VERSION = (JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;

/** Everything an error exposes when logged or serialised. */
function exposed(err: unknown): string {
  const e = err as Error & Record<string, unknown>;
  return [e.message, e.stack, JSON.stringify(e), String(e.cause ?? '')].join('\n');
}

async function caught(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('maaBaseUrl', () => {
  it('accepts bare hosts, host:port and https origins', () => {
    expect(maaBaseUrl('sharedneu.neu.attest.azure.net')).toBe('https://sharedneu.neu.attest.azure.net');
    expect(maaBaseUrl(' SharedNeu.neu.attest.azure.net ')).toBe('https://sharedneu.neu.attest.azure.net');
    expect(maaBaseUrl('127.0.0.1:40123')).toBe('https://127.0.0.1:40123');
    expect(maaBaseUrl('https://127.0.0.1:40123/')).toBe('https://127.0.0.1:40123');
    expect(maaBaseUrl('https://maa.example:443')).toBe('https://maa.example');
    expect(maaBaseUrl('[::1]:8443')).toBe('https://[::1]:8443');
  });

  it.each([
    ['', /is empty/],
    ['http://maa.example', /https only/],
    ['ftp://maa.example', /https only/],
    ['https://maa.example/attest', /must not carry a path/],
    ['maa.example/attest', /must not carry a path/],
    ['https://maa.example?x=1', /query/],
    ['maa.example#frag', /query or fragment/],
    ['https://user:pw@maa.example', /credentials/],
    ['maa example', /not a host name or URL/],
  ])('refuses %j', (endpoint, msg) => {
    expect(() => maaBaseUrl(endpoint)).toThrow(expect.objectContaining({ code: 'ERR_MAA_ENDPOINT', status: 400, message: expect.stringMatching(msg) }));
  });
});

describe('MaaClient against a loopback HTTPS server', () => {
  let server: Loopback;
  const fetch = trustingFetch();
  beforeAll(async () => {
    server = await startLoopback(() => ({ status: 500 }));
  });
  afterAll(async () => {
    await server.close();
    fetch.destroy();
  });
  beforeEach(() => {
    server.requests.length = 0;
  });

  it('posts the SevSnpVm request and returns the token', async () => {
    server.handler = () => ({ status: 200, body: { token: TOKEN } });
    const input = simulatedInput();
    const token = await new MaaClient({ fetch }).attest(server.endpoint, input);
    expect(token).toBe(TOKEN);
    expect(server.requests).toHaveLength(1);
    const [req] = server.requests;
    expect(req.method).toBe('POST');
    expect(req.url).toBe('/attest/SevSnpVm?api-version=2020-10-01');
    expect(req.headers['content-type']).toBe('application/json');
    expect(req.headers['user-agent']).toBe(`skr-sidecar/${VERSION}`);
    const parsed = parseSevSnpVmRequest(req.body);
    expect(parsed.report.equals(input.report)).toBe(true);
    expect(parsed.runtimeJson).toEqual(RUNTIME_JSON);
    expect(parsed.uvmEndorsements).toHaveLength(1);
    expect(typeof parsed.nonce).toBe('bigint');
  });

  it('uses the configured api-version and user agent, and accepts an https URL endpoint', async () => {
    server.handler = () => ({ status: 200, body: { token: TOKEN } });
    const client = new MaaClient({ fetch, apiVersion: '2022-08-01', userAgent: 'contoso-app/2.0' });
    await expect(client.attest(`${server.url}/`, simulatedInput())).resolves.toBe(TOKEN);
    expect(server.requests[0].url).toBe('/attest/SevSnpVm?api-version=2022-08-01');
    expect(server.requests[0].headers['user-agent']).toBe('contoso-app/2.0');
  });

  it('turns a 400 with MAA error JSON into MaaRefusedError carrying code and message, without retrying', async () => {
    server.handler = () => ({ status: 400, body: { error: { code: 'InvalidParameter', message: 'Report signature verification failed.' } } });
    const err = await caught(new MaaClient({ fetch, baseDelayMs: 1 }).attest(server.endpoint, simulatedInput()));
    expect(err).toBeInstanceOf(MaaRefusedError);
    expect(err).toMatchObject({
      code: 'ERR_MAA_REFUSED',
      status: 403,
      maaStatus: 400,
      maaCode: 'InvalidParameter',
      maaMessage: 'Report signature verification failed.',
    });
    expect((err as Error).message).toContain('HTTP 400');
    expect((err as Error).message).toContain('InvalidParameter: Report signature verification failed.');
    expect(server.requests).toHaveLength(1);
  });

  it('quotes at most 300 characters of a plain-text refusal', async () => {
    server.handler = () => ({ status: 401, body: `Unauthorized ${'x '.repeat(400)}` });
    const err = (await caught(new MaaClient({ fetch }).attest(server.endpoint, simulatedInput()))) as MaaRefusedError;
    expect(err).toBeInstanceOf(MaaRefusedError);
    expect(err.maaStatus).toBe(401);
    expect(err.maaCode).toBeUndefined();
    expect(err.maaMessage?.startsWith('"Unauthorized x x')).toBe(true);
    expect(err.maaMessage!.length).toBeLessThanOrEqual(303);
  });

  it('retries 503 twice, then returns the token', async () => {
    let n = 0;
    server.handler = () => (++n <= 2 ? { status: 503, body: 'busy' } : { status: 200, body: { token: TOKEN } });
    const attempts: AttemptInfo[] = [];
    const client = new MaaClient({ fetch, baseDelayMs: 1, onAttempt: (a) => attempts.push(a) });
    await expect(client.attest(server.endpoint, simulatedInput())).resolves.toBe(TOKEN);
    expect(server.requests).toHaveLength(3);
    expect(attempts.map((a) => [a.attempt, a.status, a.willRetry])).toEqual([
      [1, 503, true],
      [2, 503, true],
      [3, 200, false],
    ]);
    // Every attempt carries the same request.
    expect(new Set(server.requests.map((r) => r.body)).size).toBe(1);
  });

  it('honours Retry-After on 429', async () => {
    let n = 0;
    server.handler = () => (++n === 1 ? { status: 429, headers: { 'retry-after': '1' }, body: { error: { code: 'TooManyRequests', message: 'slow down' } } } : { status: 200, body: { token: TOKEN } });
    const attempts: AttemptInfo[] = [];
    const client = new MaaClient({ fetch, baseDelayMs: 1, maxDelayMs: 5000, onAttempt: (a) => attempts.push(a) });
    await expect(client.attest(server.endpoint, simulatedInput())).resolves.toBe(TOKEN);
    expect(server.requests).toHaveLength(2);
    expect(attempts[0]).toMatchObject({ status: 429, willRetry: true, delayMs: 1000 });
  });

  it('retries 408 and 5xx other than 503 too', async () => {
    const statuses = [408, 500, 501];
    server.handler = () => (statuses.length ? { status: statuses.shift()! } : { status: 200, body: { token: TOKEN } });
    await expect(new MaaClient({ fetch, baseDelayMs: 1 }).attest(server.endpoint, simulatedInput())).resolves.toBe(TOKEN);
    expect(server.requests).toHaveLength(4);
  });

  it('gives up with UpstreamError carrying the last status when 5xx persists', async () => {
    server.handler = () => ({ status: 503, body: { error: { code: 'ServiceUnavailable', message: 'down' } } });
    const err = await caught(new MaaClient({ fetch, retries: 2, baseDelayMs: 1 }).attest(server.endpoint, simulatedInput()));
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err).toMatchObject({ code: 'ERR_UPSTREAM', status: 502, upstream: 'maa', upstreamStatus: 503 });
    expect(server.requests).toHaveLength(3);
  });

  it('refuses a 200 without a usable token', async () => {
    for (const body of [{ notToken: 1 }, { token: '' }, { token: 'not a jwt' }, 'plain text']) {
      server.handler = () => ({ status: 200, body });
      await expect(new MaaClient({ fetch }).attest(server.endpoint, simulatedInput())).rejects.toMatchObject({ code: 'ERR_MAA_RESPONSE', status: 502 });
    }
  });

  it('never puts the request body or a token in its errors, even when MAA echoes them', async () => {
    const input = simulatedInput();
    // A hostile or chatty MAA echoing the whole request and a token in its error text.
    server.handler = (req) => ({ status: 400, body: { error: { code: 'Bad', message: `cannot process ${req.body} ${TOKEN}` } } });
    const refused = await caught(new MaaClient({ fetch }).attest(server.endpoint, input));
    server.handler = (req) => ({ status: 502, body: `gateway saw ${req.body} ${TOKEN}` });
    const upstream = await caught(new MaaClient({ fetch, retries: 0 }).attest(server.endpoint, input));
    server.handler = (req) => ({ status: 505, body: `not supported: ${req.body} ${TOKEN}` });
    const other = await caught(new MaaClient({ fetch, retries: 0 }).attest(server.endpoint, input));
    server.handler = () => ({ status: 200, body: { token: `${TOKEN} ` } });
    const badToken = await caught(new MaaClient({ fetch }).attest(server.endpoint, input));

    const sent = JSON.parse(server.requests[0].body) as { report: string; runtimeData: { data: string } };
    const secrets = [sent.report.slice(0, 40), sent.report.slice(-40), sent.runtimeData.data.slice(0, 40), input.report.toString('base64url').slice(0, 40), TOKEN, TOKEN.split('.')[1]];
    for (const err of [refused, upstream, other, badToken]) {
      const text = exposed(err);
      for (const s of secrets) expect(text).not.toContain(s);
    }
    expect(refused).toBeInstanceOf(MaaRefusedError);
    expect((refused as MaaRefusedError).maaMessage).toContain('cannot process');
    expect((refused as MaaRefusedError).maaMessage).toContain('<redacted>');
    expect(upstream).toMatchObject({ upstreamStatus: 502 });
    expect(other).toMatchObject({ upstreamStatus: 505 });
  });

  it('reports an unreachable MAA as UpstreamError', async () => {
    const port = await closedPort();
    const err = await caught(new MaaClient({ fetch, retries: 1, baseDelayMs: 1 }).attest(`127.0.0.1:${port}`, simulatedInput()));
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err).toMatchObject({ code: 'ERR_UPSTREAM', status: 502, upstream: 'maa' });
    expect((err as Error).message).toMatch(/ECONNREFUSED/);
  });

  it('refuses a server whose certificate is not trusted', async () => {
    server.handler = () => ({ status: 200, body: { token: TOKEN } });
    const untrusting = createHttpsFetch({ keepAlive: false }); // system roots only: the local CA is unknown
    try {
      await expect(new MaaClient({ fetch: untrusting, retries: 0 }).attest(server.endpoint, simulatedInput())).rejects.toBeInstanceOf(UpstreamError);
    } finally {
      untrusting.destroy();
    }
    expect(server.requests).toHaveLength(0);
  });

  it('refuses bad endpoints before sending anything', async () => {
    await expect(new MaaClient({ fetch }).attest(`http://${server.endpoint}`, simulatedInput())).rejects.toMatchObject({ code: 'ERR_MAA_ENDPOINT' });
    expect(server.requests).toHaveLength(0);
  });
});
