/**
 * Reuse of an MAA token for further key releases while it is valid. A key-release token binds the
 * public JWKS of a wrapping key (`x-ms-runtime`), so the token is only useful together with that
 * key's private half: the cache stores them as one entry (`binding`) and hands out both or neither.
 *
 * - Keyed by the MAA origin (`https://host[:port]`, host lower-cased): a token from one MAA endpoint
 *   never serves a release that names another.
 * - Reused until `exp − margin` (default 5 min before expiry, and never longer than 8 h after it
 *   was obtained); a token already inside the margin is used once and not stored.
 * - Concurrent misses for one endpoint make one MAA call (single flight); failures are not cached.
 * - Only tokens and their wrapping keys live here; released keys never do.
 */
import { ConfigError } from '../common/errors';
import { toEndpoint, type Endpoint } from '../common/endpoint';

export const DEFAULT_TOKEN_REUSE_MARGIN_MS = 5 * 60_000;
const DEFAULT_MAX_LIFETIME_MS = 8 * 3600_000;
const DEFAULT_MAX_ENTRIES = 16;

export interface MaaTokenCacheOptions {
  /** Default true; false makes every get() call MAA. */
  enabled?: boolean;
  /** Stop reusing a token this long before its `exp` (default 5 min). */
  marginMs?: number;
  /** Upper bound on reuse counted from when the token was obtained, whatever its `exp` (default 8 h). */
  maxLifetimeMs?: number;
  /** Endpoints remembered at once (least recently obtained dropped first; default 16). */
  maxEntries?: number;
  /**
   * Bound on a shared mint, which runs without any one caller's signal (default 60 s, the request
   * deadline): it must not keep the device and MAA busy long after every waiter has given up.
   */
  sharedMintTimeoutMs?: number;
  now?: () => number;
}

export interface AttestedBinding<T> {
  token: string;
  /** What the token binds (the wrapping key); returned with the token, never without it. */
  binding: T;
}

export interface TokenLookup<T> extends AttestedBinding<T> {
  /** `minted`: this caller's MAA call; `joined`: a concurrent caller's call; `cached`: stored earlier. */
  source: 'minted' | 'joined' | 'cached';
}

interface Entry<T> extends AttestedBinding<T> {
  reuseUntil: number;
}

/** `exp` (seconds) from a compact JWS payload, undefined when absent or unreadable. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (!payload) return undefined;
  try {
    const exp = (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { exp?: unknown }).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

export class MaaTokenCache<T> {
  readonly enabled: boolean;
  readonly marginMs: number;
  private readonly maxLifetimeMs: number;
  private readonly maxEntries: number;
  private readonly sharedMintTimeoutMs: number;
  private readonly now: () => number;
  private readonly entries = new Map<string, Entry<T>>();
  private readonly inflight = new Map<string, Promise<AttestedBinding<T>>>();

  constructor(opts: MaaTokenCacheOptions = {}) {
    this.enabled = opts.enabled ?? true;
    this.marginMs = opts.marginMs ?? DEFAULT_TOKEN_REUSE_MARGIN_MS;
    this.maxLifetimeMs = opts.maxLifetimeMs ?? DEFAULT_MAX_LIFETIME_MS;
    this.maxEntries = opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.sharedMintTimeoutMs = opts.sharedMintTimeoutMs ?? 60_000;
    this.now = opts.now ?? Date.now;
    if (!Number.isFinite(this.marginMs) || this.marginMs < 0) throw new ConfigError(`MAA token reuse margin must be ≥ 0 ms, got ${this.marginMs}`);
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) throw new ConfigError(`MAA token cache size must be ≥ 1, got ${this.maxEntries}`);
  }

  /** The cache key of an endpoint (throws InvalidInputError for a bad endpoint, as the MAA client would). */
  static keyOf(endpoint: Endpoint | string): string {
    return toEndpoint('maa', endpoint).origin;
  }

  /**
   * A valid token and its binding for `endpoint`: a stored one, the result of a concurrent caller's
   * `mint`, or a fresh `mint(signal)`. The shared mint runs without any caller's signal, so one
   * caller giving up does not fail the others; each caller still stops waiting on its own signal.
   */
  async get(endpoint: Endpoint | string, mint: (signal?: AbortSignal) => Promise<AttestedBinding<T>>, signal?: AbortSignal): Promise<TokenLookup<T>> {
    if (!this.enabled) return { ...(await mint(signal)), source: 'minted' };
    const key = MaaTokenCache.keyOf(endpoint);
    const hit = this.entries.get(key);
    if (hit) {
      if (this.now() < hit.reuseUntil) return { token: hit.token, binding: hit.binding, source: 'cached' };
      this.entries.delete(key);
    }
    const running = this.inflight.get(key);
    if (running) return { ...(await abortable(running, signal)), source: 'joined' };
    // Shared mints are bounded in number too: a caller rotating endpoint names cannot start more
    // background attestations than the cache remembers; past that, it mints under its own signal.
    if (this.inflight.size >= this.maxEntries) {
      const own = await mint(signal);
      this.store(key, own, this.now());
      return { ...own, source: 'minted' };
    }

    const started = this.now();
    const p = mint(AbortSignal.timeout(this.sharedMintTimeoutMs)).then((got) => {
      this.store(key, got, started);
      return got;
    });
    this.inflight.set(key, p);
    const clear = () => {
      if (this.inflight.get(key) === p) this.inflight.delete(key);
    };
    p.then(clear, clear);
    return { ...(await abortable(p, signal)), source: 'minted' };
  }

  /** Forget `token` for `endpoint` (e.g. the vault refused it); a newer entry is left alone. */
  invalidate(endpoint: Endpoint | string, token: string): void {
    let key: string;
    try {
      key = MaaTokenCache.keyOf(endpoint);
    } catch {
      return;
    }
    if (this.entries.get(key)?.token === token) this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  private store(key: string, got: AttestedBinding<T>, obtainedAt: number): void {
    const exp = tokenExpiry(got.token);
    if (exp === undefined) return;
    const reuseUntil = Math.min(exp * 1000 - this.marginMs, obtainedAt + this.maxLifetimeMs);
    if (reuseUntil <= this.now()) return;
    this.entries.delete(key);
    this.entries.set(key, { ...got, reuseUntil });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }
}
