/**
 * What the sidecar records about its own work: Prometheus series (requests, stages, upstream
 * attempts, refusals, cache ratios), per-upstream health for /status, and a per-request context
 * (AsyncLocalStorage) that collects upstream request ids for the audit line. The wrappers here sit
 * between the sidecar's assembly and the layers below, so those layers need no metrics code.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { AccessToken } from '@azure/core-auth';
import { TokenProvider, type TokenProviderOptions } from '../akv/identity';
import { clip } from '../common/clip';
import { redactText } from '../common/redact';
import type { CacheStats } from '../certs/cache';
import { CollateralProvider } from '../certs/provider';
import { MaaClient, type MaaClientOptions } from '../maa/client';
import type { KeyReleaseService } from './attestation';
import type { AttemptInfo, FetchLike } from '../common/http';
import type { EvidenceSource, Evidence, ReportRequest } from '../snp/evidence';
import type { Semaphore } from './limits';
import { Counter, Gauge, Histogram, Registry } from './metrics';

export type Stage = 'device' | 'collateral' | 'maa' | 'identity' | 'vault' | 'unwrap';
export type Upstream = 'maa' | 'vault' | 'identity' | 'collateral';

/** Per-request facts gathered while the request runs. */
export interface RequestContext {
  /** x-ms-request-id (and similar) of every upstream answer, in order. */
  upstreamRequestIds: string[];
  /** When the last vault answer arrived (ms since epoch): the rest of a release is JWS check + unwrap. */
  lastVaultAt?: number;
}

const requestContext = new AsyncLocalStorage<RequestContext>();

export function runWithContext<T>(ctx: RequestContext, fn: () => Promise<T>): Promise<T> {
  return requestContext.run(ctx, fn);
}

export function currentContext(): RequestContext | undefined {
  return requestContext.getStore();
}

export interface UpstreamState {
  consecutiveFailures: number;
  failures: number;
  successes: number;
  lastError?: string;
  lastFailureAt?: string;
  lastSuccessAt?: string;
}

/** Consecutive failures per upstream; /status shows them once one has failed. */
export class UpstreamHealth {
  private readonly state = new Map<string, UpstreamState>();

  private get(name: string): UpstreamState {
    let s = this.state.get(name);
    if (!s) {
      s = { consecutiveFailures: 0, failures: 0, successes: 0 };
      this.state.set(name, s);
    }
    return s;
  }

  success(name: string): void {
    const s = this.get(name);
    s.consecutiveFailures = 0;
    s.successes++;
    s.lastSuccessAt = new Date().toISOString();
  }

  failure(name: string, reason: string): void {
    const s = this.get(name);
    s.consecutiveFailures++;
    s.failures++;
    // Shown in /status: outside text, so capped and redacted like any echo.
    s.lastError = clip(redactText(reason), 200);
    s.lastFailureAt = new Date().toISOString();
  }

  snapshot(): Record<string, UpstreamState & { healthy: boolean }> {
    const out: Record<string, UpstreamState & { healthy: boolean }> = {};
    for (const [k, v] of this.state) out[k] = { ...v, healthy: v.consecutiveFailures < UNHEALTHY_AFTER };
    return out;
  }
}

/** Consecutive failed attempts after which /status reports an upstream as unhealthy. */
export const UNHEALTHY_AFTER = 3;

export class SidecarMetrics {
  readonly registry = new Registry();
  readonly requests = this.registry.register(new Counter('skr_http_requests_total', 'HTTP requests by route, status and outcome'));
  readonly requestSeconds = this.registry.register(new Histogram('skr_http_request_duration_seconds', 'HTTP request latency by route and outcome'));
  readonly stageSeconds = this.registry.register(new Histogram('skr_stage_duration_seconds', 'Time per call of each stage (device, collateral, maa, identity, vault, unwrap) by outcome'));
  readonly upstreamAttempts = this.registry.register(new Counter('skr_upstream_attempts_total', 'Outbound HTTP attempts by upstream and result'));
  readonly refusals = this.registry.register(new Counter('skr_refused_requests_total', 'Requests refused before any work, by reason'));
  readonly releases = this.registry.register(new Counter('skr_key_releases_total', 'Key release requests by outcome'));

  /** Gauges need live sources; sidecar assembly attaches them once they exist. */
  attach(sources: { releases?: Semaphore; device?: Semaphore; cache?: () => { primary: CacheStats; refresh?: CacheStats } }): void {
    this.registry.register(
      new Gauge('skr_in_flight', 'Requests holding a slot (releases) or the device, and callers queued for the device', () => [
        ...(sources.releases ? [{ labels: { what: 'releases' }, value: sources.releases.inUse }] : []),
        ...(sources.device ? [{ labels: { what: 'device' }, value: sources.device.inUse }, { labels: { what: 'device_queue' }, value: sources.device.queued }] : []),
      ]),
    );
    const cache = sources.cache;
    if (!cache) return;
    const each = (f: (s: CacheStats) => number) => () => {
      const s = cache();
      return [{ labels: { cache: 'primary' }, value: f(s.primary) }, ...(s.refresh ? [{ labels: { cache: 'refresh' }, value: f(s.refresh) }] : [])];
    };
    this.registry.register(new Gauge('skr_collateral_cache_hits', 'Collateral cache hits', each((s) => s.hits)));
    this.registry.register(new Gauge('skr_collateral_cache_misses', 'Collateral cache misses', each((s) => s.misses)));
    this.registry.register(
      new Gauge('skr_collateral_cache_hit_ratio', 'Collateral cache hits / lookups (NaN before the first lookup)', each((s) => (s.hits + s.misses ? s.hits / (s.hits + s.misses) : NaN))),
    );
  }

  /** Time one call of a stage. */
  async stage<T>(stage: Stage, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      const v = await fn();
      this.stageSeconds.observe({ stage, outcome: 'ok' }, (performance.now() - t0) / 1000);
      return v;
    } catch (e) {
      this.stageSeconds.observe({ stage, outcome: 'error' }, (performance.now() - t0) / 1000);
      throw e;
    }
  }

  /** An onAttempt hook for fetchWithRetry-based clients (MAA, THIM/KDS). */
  attemptObserver(health: UpstreamHealth, name: Upstream): (info: AttemptInfo) => void {
    return (info) => {
      const failed = info.reason !== undefined;
      this.upstreamAttempts.inc({ upstream: name, result: failed ? (info.status ? `status_${info.status}` : 'network') : 'ok' });
      if (failed) health.failure(name, info.reason ?? 'error');
      else health.success(name);
    };
  }
}

const REQUEST_ID_HEADERS = ['x-ms-request-id', 'x-ms-correlation-request-id', 'request-id'];

/**
 * A FetchLike that times each call, records the upstream's request id in the request context, and
 * counts failures (network errors, 429, 5xx) against the upstream's health. `timeoutMs` bounds one
 * attempt for clients (the vault SDK) that set none themselves.
 */
export function observedFetch(inner: FetchLike, name: Upstream, metrics: SidecarMetrics, health: UpstreamHealth, opts: { timeoutMs?: number; stage?: Stage } = {}): FetchLike {
  return async (input, init) => {
    const t0 = performance.now();
    const signals = [init?.signal, opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined].filter((s): s is AbortSignal => Boolean(s));
    const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
    const ctx = currentContext();
    let outcome = 'ok';
    try {
      const res = await inner(input, { ...init, ...(signal ? { signal } : {}) });
      for (const h of REQUEST_ID_HEADERS) {
        const id = res.headers.get(h);
        if (id && ctx) {
          ctx.upstreamRequestIds.push(`${name}:${id.slice(0, 100)}`);
          break;
        }
      }
      if (res.status === 429 || res.status >= 500) {
        outcome = 'error';
        health.failure(name, `status ${res.status}`);
        metrics.upstreamAttempts.inc({ upstream: name, result: `status_${res.status}` });
      } else {
        health.success(name);
        metrics.upstreamAttempts.inc({ upstream: name, result: 'ok' });
      }
      if (ctx && name === 'vault') ctx.lastVaultAt = Date.now();
      return res;
    } catch (e) {
      outcome = 'error';
      const err = e as { name?: string; cause?: { code?: string } };
      const reason = err.name === 'TimeoutError' ? 'timeout' : (err.cause?.code ?? err.name ?? 'error');
      health.failure(name, reason);
      metrics.upstreamAttempts.inc({ upstream: name, result: 'network' });
      throw e;
    } finally {
      if (opts.stage) metrics.stageSeconds.observe({ stage: opts.stage, outcome }, (performance.now() - t0) / 1000);
    }
  };
}

/**
 * The evidence source the routes see: one device call at a time (the firmware serialises guest
 * requests anyway; the simulated source signs synchronously), a bounded queue in front, each
 * call timed as the `device` stage.
 */
export class GuardedEvidenceSource implements EvidenceSource {
  readonly kind: EvidenceSource['kind'];
  readonly description: string;

  constructor(private readonly inner: EvidenceSource, private readonly gate: Semaphore, private readonly metrics: SidecarMetrics) {
    this.kind = inner.kind;
    this.description = inner.description;
  }

  getReport(req: ReportRequest): Promise<Evidence> {
    return this.gate.run(() => this.metrics.stage('device', () => this.inner.getReport(req)));
  }
}

/** The MAA client, each attest call timed as the `maa` stage. */
export class ObservedMaaClient extends MaaClient {
  constructor(private readonly metrics: SidecarMetrics, opts: MaaClientOptions) {
    super(opts);
  }

  override attest(...args: Parameters<MaaClient['attest']>): Promise<string> {
    return this.metrics.stage('maa', () => super.attest(...args));
  }
}

/** Evidence + chain, timed as the `collateral` stage (it includes the device call it makes). */
export class ObservedCollateralProvider extends CollateralProvider {
  constructor(private readonly metrics: SidecarMetrics, opts: ConstructorParameters<typeof CollateralProvider>[0]) {
    super(opts);
  }

  override getEvidenceWithChain(...args: Parameters<CollateralProvider['getEvidenceWithChain']>): ReturnType<CollateralProvider['getEvidenceWithChain']> {
    return this.metrics.stage('collateral', () => super.getEvidenceWithChain(...args));
  }
}

/** Identity tokens (IMDS / workload identity), timed as the `identity` stage and counted in /status. */
export class ObservedTokenProvider extends TokenProvider {
  constructor(private readonly metrics: SidecarMetrics, private readonly health: UpstreamHealth, opts: TokenProviderOptions) {
    super(opts);
  }

  override async getAccessToken(...args: Parameters<TokenProvider['getAccessToken']>): Promise<AccessToken> {
    try {
      const t = await this.metrics.stage('identity', () => super.getAccessToken(...args));
      this.health.success('identity');
      return t;
    } catch (e) {
      this.health.failure('identity', e instanceof Error ? e.message : 'error');
      throw e;
    }
  }
}

/**
 * The release service the route calls. After the vault's last answer, what remains of a release is
 * local: JWS + chain verification, key_hsm decoding and the unwrap; that span is the `unwrap` stage.
 */
export function observedRelease(inner: KeyReleaseService, metrics: SidecarMetrics): KeyReleaseService {
  return {
    async release(req, signal) {
      const out = await inner.release(req, signal);
      const at = currentContext()?.lastVaultAt;
      if (at !== undefined) metrics.stageSeconds.observe({ stage: 'unwrap', outcome: 'ok' }, (Date.now() - at) / 1000);
      return out;
    },
  };
}
