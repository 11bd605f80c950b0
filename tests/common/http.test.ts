import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fetchWithRetry, parseRetryAfter, AttemptInfo, describeRequest } from '../../src/common/http';
import { UpstreamError } from '../../src/common/errors';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void;

async function serve(handler: Handler): Promise<{ url: string; hits: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => handler(req, res, ++n));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits: () => n,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

const fast = { baseDelayMs: 1, maxDelayMs: 5, timeoutMs: 2000 };

describe('fetchWithRetry', () => {
  it('retries 500s and returns the eventual 200', async () => {
    const s = await serve((_q, res, n) => {
      res.statusCode = n <= 3 ? 500 : 200;
      res.end(n <= 3 ? 'no' : 'yes');
    });
    try {
      const attempts: AttemptInfo[] = [];
      const failures: AttemptInfo[] = [];
      const res = await fetchWithRetry(`${s.url}/x`, undefined, { ...fast, upstream: 't', retries: 3, onAttempt: (a) => attempts.push(a), onFailure: (f) => failures.push(f) });
      expect(res.status).toBe(200);
      expect(await res.text()).toBe('yes');
      expect(s.hits()).toBe(4);
      expect(failures.map((f) => f.status)).toEqual([500, 500, 500]);
      expect(attempts.map((a) => a.attempt)).toEqual([1, 2, 3, 4]);
      expect(attempts[3].willRetry).toBe(false);
    } finally {
      await s.close();
    }
  });

  it('throws UpstreamError with the last status when retries run out, without the query', async () => {
    const s = await serve((_q, res) => {
      res.statusCode = 503;
      res.end();
    });
    try {
      const p = fetchWithRetry(`${s.url}/path/to?clientId=secret`, undefined, { ...fast, upstream: 'azure-cache', retries: 2 });
      await expect(p).rejects.toBeInstanceOf(UpstreamError);
      const err = (await p.catch((e: unknown) => e)) as UpstreamError;
      expect(err.upstream).toBe('azure-cache');
      expect(err.upstreamStatus).toBe(503);
      expect(err.code).toBe('ERR_UPSTREAM');
      expect(err.message).toContain('GET 127.0.0.1');
      expect(err.message).toContain('/path/to');
      expect(err.message).not.toContain('secret');
      expect(s.hits()).toBe(3);
    } finally {
      await s.close();
    }
  });

  it('returns non-retryable statuses to the caller at once', async () => {
    const s = await serve((_q, res) => {
      res.statusCode = 404;
      res.end('missing');
    });
    try {
      const res = await fetchWithRetry(s.url, undefined, { ...fast, upstream: 't', retries: 5 });
      expect(res.status).toBe(404);
      expect(s.hits()).toBe(1);
    } finally {
      await s.close();
    }
  });

  it('honours Retry-After: 0 and caps Retry-After: 1 at maxDelayMs', async () => {
    const s = await serve((_q, res, n) => {
      res.statusCode = n === 1 ? 429 : n === 2 ? 429 : 200;
      if (n === 1) res.setHeader('Retry-After', '0');
      if (n === 2) res.setHeader('Retry-After', '1');
      res.end();
    });
    try {
      const delays: (number | undefined)[] = [];
      const res = await fetchWithRetry(s.url, undefined, { upstream: 'amd-kds', retries: 3, baseDelayMs: 1000, maxDelayMs: 20, onFailure: (f) => delays.push(f.delayMs) });
      expect(res.status).toBe(200);
      expect(delays).toEqual([0, 20]);
    } finally {
      await s.close();
    }
  });

  it('times out a hanging attempt and reports ERR_UPSTREAM_TIMEOUT', async () => {
    const s = await serve(() => {
      /* never answers */
    });
    try {
      const reasons: string[] = [];
      const p = fetchWithRetry(s.url, undefined, { upstream: 'thim', timeoutMs: 50, retries: 1, baseDelayMs: 1, maxDelayMs: 1, onFailure: (f) => reasons.push(f.reason ?? '') });
      await expect(p).rejects.toMatchObject({ code: 'ERR_UPSTREAM_TIMEOUT', upstream: 'thim', status: 504 });
      expect(reasons).toEqual(['timeout', 'timeout']);
      expect(s.hits()).toBe(2);
    } finally {
      await s.close();
    }
  });

  it('stops at the caller deadline', async () => {
    const s = await serve((_q, res) => {
      res.statusCode = 500;
      res.end();
    });
    try {
      const ac = new AbortController();
      const p = fetchWithRetry(s.url, undefined, { upstream: 'maa', retries: 100, baseDelayMs: 10_000, maxDelayMs: 10_000, random: () => 0.5, signal: ac.signal, onFailure: () => ac.abort() });
      await expect(p).rejects.toMatchObject({ code: 'ERR_UPSTREAM_TIMEOUT', message: expect.stringContaining('deadline') });
      expect(s.hits()).toBe(1);
    } finally {
      await s.close();
    }
  });

  it('retries network errors on a closed port, then fails with the errno', async () => {
    const s = await serve(() => undefined);
    const url = s.url;
    await s.close();
    const failures: AttemptInfo[] = [];
    const p = fetchWithRetry(url, undefined, { ...fast, upstream: 'kds', retries: 2, onFailure: (f) => failures.push(f) });
    await expect(p).rejects.toMatchObject({ code: 'ERR_UPSTREAM', message: expect.stringContaining('ECONNREFUSED') });
    expect(failures).toHaveLength(3);
    expect(failures.every((f) => f.status === undefined)).toBe(true);
  });

  it('parses Retry-After dates and seconds', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('3', now)).toBe(3000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('Wed, 31 Dec 2025 00:00:05 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
    expect(describeRequest('https://h.example:8443/a/b?token=x', 'POST')).toBe('POST h.example:8443/a/b');
  });
});
