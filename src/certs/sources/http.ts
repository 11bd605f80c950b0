/** What every HTTP collateral source shares: fetch injection, retry knobs and body handling. */
import { fetchWithRetry, readBodyLimited, describeRequest, RetryOptions } from '../../common/http';
import { UpstreamError } from '../../common/errors';
import type { FetchLike } from '../types';

export interface HttpSourceOptions {
  fetch?: FetchLike;
  baseUrl?: string;
  timeoutMs?: number;
  retries?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  onAttempt?: RetryOptions['onAttempt'];
  onFailure?: RetryOptions['onFailure'];
}

/** Certificates are a few KB; anything near this is not a certificate. */
export const MAX_COLLATERAL_BYTES = 1024 * 1024;

/** GET `url`, require 2xx, return body bytes and the response headers. */
export async function getOk(
  url: string,
  upstream: string,
  opts: HttpSourceOptions,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<{ body: Buffer; headers: Headers }> {
  // Redirects are never followed (the outbound client follows none; global fetch is told not to):
  // a redirect to another host, or to http, must not move where collateral comes from.
  const res = await fetchWithRetry(url, { method: 'GET', headers, redirect: 'manual' }, {
    upstream,
    fetch: opts.fetch,
    timeoutMs: opts.timeoutMs,
    retries: opts.retries,
    baseDelayMs: opts.baseDelayMs,
    maxDelayMs: opts.maxDelayMs,
    onAttempt: opts.onAttempt,
    onFailure: opts.onFailure,
    signal,
  });
  const what = describeRequest(url);
  if (res.status < 200 || res.status > 299) {
    await res.body?.cancel().catch(() => undefined);
    const redirect = res.status >= 300 && res.status < 400 ? ' (redirects are not followed)' : '';
    throw new UpstreamError(upstream, `${what} answered ${res.status}${redirect}`, { upstreamStatus: res.status });
  }
  return { body: await readBodyLimited(res, MAX_COLLATERAL_BYTES, upstream, what), headers: res.headers };
}

/** `max-age` from Cache-Control, in seconds. */
export function maxAgeOf(headers: Headers): number | undefined {
  const m = /(?:^|,)\s*max-age\s*=\s*"?(\d+)"?/i.exec(headers.get('cache-control') ?? '');
  return m ? Number(m[1]) : undefined;
}

export function trimSlash(s: string): string {
  return s.replace(/\/+$/, '');
}

/** Parse an upstream's body; a malformed answer is the upstream's fault (502), not the caller's (400). */
export function parseUpstream<T>(upstream: string, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof UpstreamError) throw e;
    throw new UpstreamError(upstream, `${what}: unusable answer: ${(e as Error).message}`, { code: 'ERR_UPSTREAM_FORMAT', cause: e });
  }
}
