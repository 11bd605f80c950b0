/**
 * The one way the parts of the sidecar report what they do: how long each stage of a request took,
 * and every outbound attempt to an upstream (its result counts against the upstream's health; its
 * request id goes to the audit line of the request it belongs to). The server implements it with
 * Prometheus series and /status health (src/server/observe.ts); the parts only receive it, so none
 * of them holds metrics code of its own and nothing is subclassed to add metrics.
 */
import type { AttemptInfo, FetchLike, UpstreamAnswer, UpstreamRequest } from './http';

export type Stage = 'device' | 'collateral' | 'maa' | 'identity' | 'vault' | 'unwrap';
export type Upstream = 'maa' | 'vault' | 'identity' | 'collateral';

/** One outbound HTTP attempt: `status` when an answer arrived, `failure` when the attempt failed. */
export interface UpstreamAttempt {
  status?: number;
  /** Why the attempt failed (`timeout`, `ECONNREFUSED`, `status 503`); absent for a success. */
  failure?: string;
}

export interface Telemetry {
  /** Time one call of a stage (outcome `ok` or `error`). */
  stage<T>(stage: Stage, fn: () => Promise<T>): Promise<T>;
  /** Count one outbound attempt and note it in the upstream's health. */
  attempt(upstream: Upstream, a: UpstreamAttempt): void;
  /** Health only, for an upstream reached through a library whose attempts we do not see (identity). */
  outcome(upstream: Upstream, failure?: string): void;
  /** An upstream's request id, for the audit line of the current request. */
  requestId(upstream: Upstream, id: string): void;
}

/** Telemetry that records nothing (tests, CLI tools). */
export const NO_TELEMETRY: Telemetry = Object.freeze({
  stage: <T>(_stage: Stage, fn: () => Promise<T>) => fn(),
  attempt: () => undefined,
  outcome: () => undefined,
  requestId: () => undefined,
});

/** An onAttempt hook for fetchWithRetry-based clients (MAA, THIM/KDS). */
export function attemptHook(telemetry: Telemetry, upstream: Upstream): (info: AttemptInfo) => void {
  return (info) =>
    telemetry.attempt(upstream, { ...(info.status ? { status: info.status } : {}), ...(info.reason !== undefined ? { failure: info.reason } : {}) });
}

const REQUEST_ID_HEADERS = ['x-ms-request-id', 'x-ms-correlation-request-id', 'request-id'];

/**
 * A FetchLike reporting each call as one attempt of `upstream` (429 and 5xx count as failures)
 * with its request id, optionally timed as `stage`. `timeoutMs` bounds one attempt for clients
 * (the vault SDK) that set none themselves.
 */
export function reportingFetch(inner: FetchLike, upstream: Upstream, telemetry: Telemetry, opts: { timeoutMs?: number; stage?: Stage } = {}): FetchLike {
  const report = reporter<Response>(upstream, telemetry, opts.stage, (res, name) => res.headers.get(name) ?? undefined);
  return (input, init) => {
    const signals = [init?.signal, opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined].filter((s): s is AbortSignal => Boolean(s));
    const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
    return report(() => inner(input, { ...init, ...(signal ? { signal } : {}) }));
  };
}

/** reportingFetch for an UpstreamRequest (the lean direct vault POST): the same attempts, ids and stage. */
export function reportingRequest(inner: UpstreamRequest, upstream: Upstream, telemetry: Telemetry, opts: { stage?: Stage } = {}): UpstreamRequest {
  const report = reporter<UpstreamAnswer>(upstream, telemetry, opts.stage, (a, name) => a.header(name));
  return (url, init) => report(() => inner(url, init));
}

/**
 * One attempt reported: a failure to get an answer, or the answer's status (429 and 5xx count as
 * failures) and request id; timed as `stage` when given, whose outcome follows the attempt's
 * (429/5xx answers are timed as errors but still returned).
 */
function reporter<A extends { status: number }>(
  upstream: Upstream,
  telemetry: Telemetry,
  stage: Stage | undefined,
  header: (answer: A, name: string) => string | undefined,
): (send: () => Promise<A>) => Promise<A> {
  const call = async (send: () => Promise<A>): Promise<A> => {
    let res: A;
    try {
      res = await send();
    } catch (e) {
      const err = e as { name?: string; cause?: { code?: string } };
      telemetry.attempt(upstream, { failure: err.name === 'TimeoutError' ? 'timeout' : (err.cause?.code ?? err.name ?? 'error') });
      throw e;
    }
    for (const h of REQUEST_ID_HEADERS) {
      const id = header(res, h);
      if (id) {
        telemetry.requestId(upstream, id.slice(0, 100));
        break;
      }
    }
    const failed = res.status === 429 || res.status >= 500;
    telemetry.attempt(upstream, failed ? { status: res.status, failure: `status ${res.status}` } : { status: res.status });
    if (stage && failed) throw new StageFailed(res);
    return res;
  };
  if (!stage) return call;
  return (send) =>
    telemetry.stage(stage, () => call(send)).catch((e: unknown) => {
      if (e instanceof StageFailed) return e.answer as A;
      throw e;
    });
}

/** Carries a 429/5xx answer out of a timed stage so the stage records `error`; the caller still gets the answer. */
class StageFailed extends Error {
  constructor(readonly answer: unknown) {
    super('upstream answered with a failure status');
  }
}
