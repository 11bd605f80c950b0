/**
 * What the sidecar records about its own work: Prometheus series (requests, stages, upstream
 * attempts, refusals, cache ratios), per-upstream health for /status, and a per-request context
 * (AsyncLocalStorage) that collects upstream request ids for the audit line. The parts of the
 * release path report through the Telemetry interface (src/common/telemetry.ts) that
 * SidecarTelemetry implements here; none of them holds metrics code.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { clip } from '../common/clip';
import { redactText } from '../common/redact';
import type { CacheStats } from '../certs/cache';
import type { Stage, Telemetry, Upstream, UpstreamAttempt } from '../common/telemetry';
import type { EvidenceSource, Evidence, ReportRequest } from '../snp/evidence';
import type { Semaphore } from './limits';
import { Counter, Gauge, Histogram, Registry } from './metrics';

export type { Stage, Upstream };

/** Per-request facts gathered while the request runs. */
export interface RequestContext {
  /** x-ms-request-id (and similar) of every upstream answer, in order. */
  upstreamRequestIds: string[];
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
  private readonly thresholds = new Map<string, number>();

  /** Consecutive failures after which `name` is unhealthy (default UNHEALTHY_AFTER; the TPM: 1). */
  setThreshold(name: string, failures: number): void {
    this.thresholds.set(name, failures);
  }

  /** False once `name` has failed its threshold of times in a row (undefined: never used). */
  healthy(name: string): boolean | undefined {
    const s = this.state.get(name);
    return s ? s.consecutiveFailures < (this.thresholds.get(name) ?? UNHEALTHY_AFTER) : undefined;
  }

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
    for (const [k, v] of this.state) out[k] = { ...v, healthy: v.consecutiveFailures < (this.thresholds.get(k) ?? UNHEALTHY_AFTER) };
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
  readonly grpcRequests = this.registry.register(new Counter('skr_grpc_requests_total', 'gRPC key provider calls by method, status code and outcome'));
  readonly grpcRequestSeconds = this.registry.register(new Histogram('skr_grpc_request_duration_seconds', 'gRPC key provider call latency by method and outcome'));

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
}

/** The Telemetry every part of the sidecar reports through: Prometheus series, /status health, audit ids. */
export class SidecarTelemetry implements Telemetry {
  constructor(readonly metrics: SidecarMetrics, readonly health: UpstreamHealth) {}

  stage<T>(stage: Stage, fn: () => Promise<T>): Promise<T> {
    return this.metrics.stage(stage, fn);
  }

  attempt(upstream: Upstream, a: UpstreamAttempt): void {
    const failed = a.failure !== undefined;
    this.metrics.upstreamAttempts.inc({ upstream, result: failed ? (a.status ? `status_${a.status}` : 'network') : 'ok' });
    this.outcome(upstream, a.failure);
  }

  outcome(upstream: Upstream, failure?: string): void {
    if (failure !== undefined) this.health.failure(upstream, failure);
    else this.health.success(upstream);
  }

  requestId(upstream: Upstream, id: string): void {
    currentContext()?.upstreamRequestIds.push(`${upstream}:${id}`);
  }
}

/**
 * The evidence source the routes see: one device call at a time (the firmware serialises guest
 * requests anyway; the simulated source signs synchronously), a bounded queue in front, each
 * call timed as the `device` stage.
 */
export class GuardedEvidenceSource implements EvidenceSource {
  readonly kind: EvidenceSource['kind'];
  readonly description: string;

  constructor(private readonly inner: EvidenceSource, private readonly gate: Semaphore, private readonly telemetry: Telemetry) {
    this.kind = inner.kind;
    this.description = inner.description;
  }

  getReport(req: ReportRequest): Promise<Evidence> {
    return this.gate.run(() => this.telemetry.stage('device', () => this.inner.getReport(req)));
  }
}
