/**
 * Outbound HTTP with bounded retries. Every upstream the sidecar calls (AMD KDS, THIM, the Azure
 * cache, MAA, IMDS, Key Vault) goes through here so that retry, timeout and error-shape rules are
 * the same everywhere, and so failures can be counted per upstream.
 */
import { readBounded } from './bounded-body';
import { clip } from './clip';
import { UpstreamError } from './errors';

/** Statuses worth another attempt: the server said "later", or a proxy/gateway hiccup. */
/** A `fetch`-compatible function, so tests can route outbound HTTP to loopback servers. */
export type FetchLike = (input: string | URL, init?: RequestInit) => Promise<Response>;

/**
 * One upstream answer without fetch's Response, Headers and web stream (the lean path of the direct
 * vault POST): the status and headers as they arrived, the body collected by the same bounds.
 */
export interface UpstreamAnswer {
  status: number;
  /** A response header by lower-case name (repeated ones joined with ", "). */
  header(name: string): string | undefined;
  /** The whole body; fails (MalformedAnswerError or UpstreamError) past the byte cap or when cut off. */
  body(): Promise<Buffer>;
  /** Not reading the body: drop it (and its connection, if it is still arriving). */
  discard(): void;
}

export interface UpstreamRequestInit {
  method: string;
  headers: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** Bound on the whole attempt, answer and body included (fails with an error named TimeoutError). */
  timeoutMs?: number;
}

export type UpstreamRequest = (url: URL, init: UpstreamRequestInit) => Promise<UpstreamAnswer>;

export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504]);

export interface AttemptInfo {
  upstream: string;
  /** 1-based attempt number. */
  attempt: number;
  /** HTTP status, when a response arrived. */
  status?: number;
  /** Short reason for a failed attempt (`timeout`, `ECONNREFUSED`, `status 503`). */
  reason?: string;
  /** Whether another attempt follows. */
  willRetry: boolean;
  /** Delay before the next attempt, when there is one. */
  delayMs?: number;
}

export interface RetryOptions {
  /** Defaults to the global `fetch`. */
  fetch?: FetchLike;
  /** Name of the upstream for errors and metrics, e.g. `amd-kds`. */
  upstream: string;
  /** Per-attempt timeout. Default 10 s. */
  timeoutMs?: number;
  /** Extra attempts after the first. Default 3. */
  retries?: number;
  /** Backoff base: attempt n waits up to base·2^(n-1). Default 250 ms. */
  baseDelayMs?: number;
  /** Cap for any single wait, including one asked for by Retry-After. Default 10 s. */
  maxDelayMs?: number;
  /** Overall deadline / cancellation from the caller. */
  signal?: AbortSignal;
  /** Which statuses to retry; default {@link RETRYABLE_STATUSES}. */
  retryOn?: (status: number) => boolean;
  /** Called after every attempt, successful or not. */
  onAttempt?: (info: AttemptInfo) => void;
  /** Called after every failed attempt (network error, timeout, retryable status). */
  onFailure?: (info: AttemptInfo) => void;
  /** Source of randomness for jitter, in [0, 1). Injectable so tests stay deterministic. */
  random?: () => number;
}

/** `GET host/path`: never the query (it can carry client ids), headers or bodies. */
export function describeRequest(url: string | URL, method = 'GET'): string {
  try {
    const u = new URL(String(url));
    return `${method} ${u.host}${u.pathname}`;
  } catch {
    return `${method} <invalid url>`;
  }
}

/** Retry-After as milliseconds: delta-seconds or an HTTP date; undefined when absent or unparsable. */
export function parseRetryAfter(value: string | null, nowMs: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}

function failureReason(err: unknown): string {
  // Duck-typed: errors from undici may come from another realm, where `instanceof Error` fails.
  if (typeof err !== 'object' || err === null) return 'error';
  const e = err as { name?: unknown; code?: unknown; message?: unknown; cause?: { code?: unknown; name?: unknown } };
  if (e.code === 'ERR_UPSTREAM_MALFORMED') return `malformed answer (${clip(String(e.message), 120)})`;
  if (e.name === 'TimeoutError' || e.cause?.name === 'TimeoutError') return 'timeout';
  if (e.cause && typeof e.cause.code === 'string') return e.cause.code;
  if (typeof e.code === 'string') return e.code;
  return typeof e.name === 'string' ? e.name : 'error';
}

/** Sleep that ends early (rejecting) when the caller's signal aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

async function discardBody(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // The body is unwanted; failing to drain it only costs a socket.
  }
}

/**
 * Fetch with retries on network errors and retryable statuses (exponential backoff with full
 * jitter; Retry-After honoured up to maxDelayMs). Resolves with the first non-retryable response
 * (2xx or not: the caller decides); throws UpstreamError when attempts run out or the deadline hits.
 */
export async function fetchWithRetry(url: string | URL, init: RequestInit | undefined, opts: RetryOptions): Promise<Response> {
  const doFetch: FetchLike = opts.fetch ?? ((input, i) => fetch(input, i));
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const retries = Math.max(0, opts.retries ?? 3);
  const baseDelayMs = opts.baseDelayMs ?? 250;
  const maxDelayMs = opts.maxDelayMs ?? 10_000;
  const retryOn = opts.retryOn ?? ((s: number) => RETRYABLE_STATUSES.has(s));
  const random = opts.random ?? Math.random;
  const what = describeRequest(url, init?.method ?? 'GET');
  let lastStatus: number | undefined;
  let lastReason = 'no attempt made';
  const deadlineError = () =>
    new UpstreamError(opts.upstream, `${what}: deadline exceeded`, { code: 'ERR_UPSTREAM_TIMEOUT', upstreamStatus: lastStatus });

  for (let attempt = 1; attempt <= retries + 1; attempt++) {
    if (opts.signal?.aborted) throw deadlineError();
    const attemptSignal = opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
    let res: Response | undefined;
    let reason: string;
    try {
      res = await doFetch(url, { ...init, signal: attemptSignal });
      lastStatus = res.status;
      if (!retryOn(res.status)) {
        opts.onAttempt?.({ upstream: opts.upstream, attempt, status: res.status, willRetry: false });
        return res;
      }
      reason = `status ${res.status}`;
    } catch (err) {
      if (opts.signal?.aborted) throw deadlineError();
      reason = failureReason(err);
    }
    lastReason = reason;
    const willRetry = attempt <= retries;
    let delayMs: number | undefined;
    if (willRetry) {
      const retryAfter = res ? parseRetryAfter(res.headers.get('retry-after')) : undefined;
      delayMs = retryAfter !== undefined
        ? Math.min(maxDelayMs, retryAfter)
        : Math.floor(random() * Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1)));
    }
    if (res) await discardBody(res);
    const info: AttemptInfo = { upstream: opts.upstream, attempt, reason, willRetry, ...(res ? { status: res.status } : {}), ...(delayMs !== undefined ? { delayMs } : {}) };
    opts.onAttempt?.(info);
    opts.onFailure?.(info);
    if (!willRetry) break;
    try {
      await sleep(delayMs ?? 0, opts.signal);
    } catch {
      throw deadlineError();
    }
  }
  throw new UpstreamError(opts.upstream, `${what} failed after ${retries + 1} attempt(s): ${lastReason}`, {
    code: lastReason === 'timeout' ? 'ERR_UPSTREAM_TIMEOUT' : 'ERR_UPSTREAM',
    upstreamStatus: lastStatus,
  });
}

/** Read a response body as bytes, refusing anything over `limit` (see bounded-body.ts). */
export function readBodyLimited(res: Response, limit: number, upstream: string, what: string): Promise<Buffer> {
  return readBounded(res, { limit, upstream, what });
}
