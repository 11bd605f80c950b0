/**
 * The AzureGuest attest call: POST the request, with retries on 408/429/5xx (Retry-After honoured by
 * fetchWithRetry), and return MAA's `token` field (the encrypted envelope, not yet a JWT). Errors carry
 * MAA's status, code and message, never the evidence.
 */
import { UpstreamError } from '../common/errors';
import { decodeUtf8, readBounded } from '../common/bounded-body';
import { fetchWithRetry, type AttemptInfo, type FetchLike } from '../common/http';
import { defaultUserAgent, maaBaseUrl, MAA_UPSTREAM } from './client';
import { MaaRefusedError, parseMaaErrorBody } from './errors';
import { MAX_ENVELOPE_CHARS } from './azure-guest-envelope';

export const AZURE_GUEST_API_VERSION = '2020-10-01';

export interface AzureGuestClientOptions {
  fetch?: FetchLike;
  userAgent?: string;
  timeoutMs?: number;
  retries?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  onAttempt?: (info: AttemptInfo) => void;
}

export function azureGuestUrl(endpoint: string): string {
  return `${maaBaseUrl(endpoint)}/attest/AzureGuest?api-version=${AZURE_GUEST_API_VERSION}`;
}

export async function postAzureGuest(endpoint: string, body: string, opts: AzureGuestClientOptions = {}, signal?: AbortSignal): Promise<string> {
  const res = await fetchWithRetry(
    azureGuestUrl(endpoint),
    { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', 'user-agent': opts.userAgent ?? defaultUserAgent() }, body },
    {
      upstream: MAA_UPSTREAM,
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
      timeoutMs: opts.timeoutMs ?? 30_000,
      retries: opts.retries ?? 3,
      ...(opts.baseDelayMs !== undefined ? { baseDelayMs: opts.baseDelayMs } : {}),
      ...(opts.maxDelayMs !== undefined ? { maxDelayMs: opts.maxDelayMs } : {}),
      ...(opts.onAttempt ? { onAttempt: opts.onAttempt } : {}),
      ...(signal ? { signal } : {}),
      retryOn: (s) => s === 408 || s === 429 || s >= 500,
    },
  );
  const read = { upstream: MAA_UPSTREAM, what: 'MAA AzureGuest response', limit: MAX_ENVELOPE_CHARS + 1024 };
  const text = decodeUtf8(await readBounded(res, read), read);
  if (res.status >= 400 && res.status < 500) throw new MaaRefusedError(res.status, parseMaaErrorBody(text));
  if (res.status < 200 || res.status >= 300) {
    const d = parseMaaErrorBody(text);
    throw new UpstreamError(MAA_UPSTREAM, `MAA answered HTTP ${res.status}${d.code || d.message ? `: ${[d.code, d.message].filter(Boolean).join(': ')}` : ''}`, { upstreamStatus: res.status });
  }
  let token: unknown;
  try {
    token = (JSON.parse(text) as { token?: unknown } | null)?.token;
  } catch {
    throw new UpstreamError(MAA_UPSTREAM, 'MAA AzureGuest response is not JSON', { code: 'ERR_MAA_RESPONSE', upstreamStatus: res.status });
  }
  if (typeof token !== 'string' || token === '') throw new UpstreamError(MAA_UPSTREAM, 'MAA AzureGuest response has no "token"', { code: 'ERR_MAA_RESPONSE', upstreamStatus: res.status });
  return token;
}
