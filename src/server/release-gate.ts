/**
 * The one way into a key release, whichever API asks (HTTP POST /key/release, gRPC UnWrapKey):
 * endpoints parsed once → MAA and vault allowlists → kid allowlist (403) → a release slot (429) →
 * the release under one deadline (504) → what the caller does with the key, then one audit line and
 * the release counter whatever the outcome. Nothing leaves the box for an endpoint that is not
 * allowlisted.
 */
import { clip } from '../common/clip';
import { parseEndpoint } from '../common/endpoint';
import { SkrError } from '../common/errors';
import { registerSecret } from '../common/redact';
import { DEFAULT_AKV_ALLOWLIST, DEFAULT_MAA_ALLOWLIST, EndpointAllowlist, type KidAllowlist } from './allowlist';
import type { KeyReleaseService } from './attestation';
import { DEFAULT_LIMITS } from './config';
import { statusOf } from './http-errors';
import { checkKidLength } from './input-bounds';
import { Semaphore } from './limits';
import type { Logger } from './logger';
import { runWithContext, SidecarMetrics, type RequestContext } from './observe';

/** A caller's own access_token is redacted for this long (past any request deadline), then forgotten. */
const CALLER_SECRET_TTL_MS = 10 * 60_000;

export function outcomeOf(status: number): string {
  if (status < 400) return 'ok';
  if (status === 403 || status === 401) return 'refused';
  if (status === 429) return 'overloaded';
  if (status < 500) return 'bad_request';
  if (status === 504) return 'timeout';
  return status === 502 ? 'upstream_error' : 'error';
}

export class DeadlineError extends SkrError {
  constructor(ms: number) {
    super('ERR_DEADLINE', `request deadline of ${ms / 1000} s exceeded (SKR_REQUEST_DEADLINE_SECONDS)`);
  }
}

/**
 * Run `fn` with an AbortSignal that fires at the deadline. When it fires the request ends with
 * DeadlineError at once, whatever the layer below is doing (the signal also cancels its upstream calls).
 */
export async function withDeadline<T>(ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new DeadlineError(ms);
      ac.abort(err);
      reject(err);
    }, ms);
  });
  try {
    return await Promise.race([fn(ac.signal), expired]);
  } catch (e) {
    if (ac.signal.aborted) throw ac.signal.reason;
    throw e;
  } finally {
    clearTimeout(timer);
    expired.catch(() => undefined);
  }
}

export interface ReleaseGateDeps {
  release: KeyReleaseService;
  logger: Logger;
  metrics?: SidecarMetrics;
  maaAllowlist?: EndpointAllowlist;
  akvAllowlist?: EndpointAllowlist;
  kidAllowlist?: KidAllowlist;
  /** Deadline for one request's upstream work (the wait for a slot included). */
  deadlineMs?: number;
  /** Slots for releases and MAA attestations; beyond them 429. */
  releaseSlots?: Semaphore;
}

/** A release as the caller names it: raw endpoint strings, a kid, maybe its own vault token. */
export interface GateRequest {
  maaEndpoint: string;
  akvEndpoint: string;
  kid: string;
  accessToken?: string;
  /** Which API asked, for the audit line (`http` is left out, as before gRPC existed). */
  api?: 'http' | 'grpc';
}

export type ReleasedJwk = Awaited<ReturnType<KeyReleaseService['release']>>;

export class ReleaseGate {
  readonly metrics: SidecarMetrics;
  readonly maaAllow: EndpointAllowlist;
  readonly akvAllow: EndpointAllowlist;
  readonly deadlineMs: number;
  readonly slots: Semaphore;

  constructor(private readonly deps: ReleaseGateDeps) {
    this.metrics = deps.metrics ?? new SidecarMetrics();
    this.maaAllow = deps.maaAllowlist ?? new EndpointAllowlist('maa', DEFAULT_MAA_ALLOWLIST);
    this.akvAllow = deps.akvAllowlist ?? new EndpointAllowlist('akv', DEFAULT_AKV_ALLOWLIST);
    this.deadlineMs = deps.deadlineMs ?? DEFAULT_LIMITS.requestDeadlineMs;
    this.slots = deps.releaseSlots ?? new Semaphore(DEFAULT_LIMITS.maxInFlightReleases, DEFAULT_LIMITS.maxQueuedReleases, 'key releases and MAA attestations');
  }

  /** Count a refusal by reason and rethrow it. */
  refuse(e: unknown, reason: string): never {
    this.metrics.refusals.inc({ reason });
    throw e;
  }

  /**
   * Release `req.kid` and hand the key to `use` (still inside the audit, so its failure is the
   * release's outcome). Input errors (kid length, endpoint names) are thrown before the audit, as 400s.
   */
  async release<T>(req: GateRequest, use: (released: ReleasedJwk) => T | Promise<T>): Promise<T> {
    const kid = req.kid.trim();
    registerSecret(req.accessToken, { ttlMs: CALLER_SECRET_TTL_MS });
    checkKidLength(kid);
    // Each endpoint is parsed once (a name that is not a DNS name is a 400 here, before any allowlist);
    // the allowlists, the clients, the audience and the caches all use these values.
    const maaEndpoint = parseEndpoint('maa', req.maaEndpoint);
    const akvEndpoint = parseEndpoint('akv', req.akvEndpoint);
    return this.audited({ kid, vaultHost: akvEndpoint.host, authority: maaEndpoint.origin, api: req.api }, async () => {
      try {
        this.maaAllow.check(maaEndpoint);
      } catch (e) {
        this.refuse(e, 'maa_endpoint');
      }
      try {
        this.akvAllow.check(akvEndpoint);
      } catch (e) {
        this.refuse(e, 'akv_endpoint');
      }
      try {
        this.deps.kidAllowlist?.check(kid);
      } catch (e) {
        this.refuse(e, 'kid');
      }
      const released = await withDeadline(this.deadlineMs, (signal) =>
        this.slots.run(() => this.deps.release.release({ maaEndpoint, akvEndpoint, kid, ...(req.accessToken ? { accessToken: req.accessToken } : {}) }, signal), signal),
      );
      return use(released);
    });
  }

  /** One audit line per release, whatever its outcome: who asked for which key where, never the key or a token. */
  private async audited<T>(what: { kid: string; vaultHost: string; authority: string; api?: 'http' | 'grpc' }, fn: () => Promise<T>): Promise<T> {
    const ctx: RequestContext = { upstreamRequestIds: [] };
    const t0 = performance.now();
    let status = 200;
    let code: string | undefined;
    try {
      return await runWithContext(ctx, fn);
    } catch (e) {
      status = statusOf(e);
      code = e instanceof SkrError ? e.code : 'ERR_INTERNAL';
      throw e;
    } finally {
      const outcome = outcomeOf(status);
      this.metrics.releases.inc({ outcome });
      this.deps.logger.info('audit: key release', {
        audit: 'key-release',
        ...(what.api && what.api !== 'http' ? { api: what.api } : {}),
        kid: clip(what.kid),
        vault: what.vaultHost,
        authority: what.authority,
        outcome,
        status,
        ...(code ? { code } : {}),
        durationMs: Math.round(performance.now() - t0),
        upstreamRequestIds: ctx.upstreamRequestIds,
      });
    }
  }
}
