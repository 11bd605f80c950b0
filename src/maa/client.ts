/**
 * The SevSnpVm attest call: build the request, POST it with retries (408/429/5xx, Retry-After),
 * and turn MAA's answer into a JWT or a typed error. Errors carry MAA's status, code and message,
 * never the request body (evidence) or a token.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { toEndpoint, parseEndpoint, type Endpoint } from '../common/endpoint';
import { InvalidInputError, UpstreamError } from '../common/errors';
import { attemptHook, NO_TELEMETRY, type Telemetry } from '../common/telemetry';
import { decodeUtf8, readBounded } from '../common/bounded-body';
import { fetchWithRetry, type AttemptInfo, type FetchLike } from '../common/http';
import { registerSecret } from '../common/redact';
import { MaaRefusedError, parseMaaErrorBody } from './errors';
import { buildSevSnpVmRequest, serializeSevSnpVmRequest, type SevSnpVmRequestInput } from './request';
import { serializeTdxVmRequest, TDX_VM_API_VERSION, type TdxVmRequestInput } from './tdx-vm';

export const DEFAULT_MAA_API_VERSION = '2020-10-01';
/** Name of this upstream in errors and metrics. */
export const MAA_UPSTREAM = 'maa' as const;
/** A token is a few KB; anything near this is not an MAA answer. */
const MAX_RESPONSE_BYTES = 1 << 20;
const JWS_COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

let cachedVersion: string | undefined;

/** `skr-sidecar/<package.json version>`, the User-Agent when SkrSideCarArgs.maaconfig.user_agent is unset. */
export function defaultUserAgent(): string {
  if (cachedVersion === undefined) {
    try {
      // Same relative path from src/maa (ts-jest) and dist/maa (compiled).
      const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', 'package.json'), 'utf8')) as { version?: unknown };
      cachedVersion = typeof pkg.version === 'string' ? pkg.version : '0.0.0';
    } catch {
      cachedVersion = '0.0.0';
    }
  }
  return `skr-sidecar/${cachedVersion}`;
}

/**
 * `https://host[:port]` for an endpoint given as a bare host, `host:port`, or an https URL with no
 * path, query or credentials. Plain http is refused: the token authorises key release.
 */
export function maaBaseUrl(endpoint: string): string {
  return parseEndpoint('maa', endpoint).origin;
}

export interface MaaClientOptions {
  fetch?: FetchLike;
  /** SkrSideCarArgs.maaconfig.user_agent; default `skr-sidecar/<version>`. */
  userAgent?: string;
  /** Default 2020-10-01 (the reference); 2022-08-01 is also current. */
  apiVersion?: string;
  /** Per-attempt timeout. Default 30 s (MAA validates a chain and a COSE endorsement per call). */
  timeoutMs?: number;
  /** Extra attempts after the first. Default 3. */
  retries?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Observe every attempt (tests, logs). */
  onAttempt?: (info: AttemptInfo) => void;
  /** Each attest call is the `maa` stage; each HTTP attempt an attempt of upstream `maa`. */
  telemetry?: Telemetry;
}

export class MaaClient {
  private readonly opts: MaaClientOptions;
  readonly userAgent: string;
  readonly apiVersion: string;

  private readonly onAttempt?: (info: AttemptInfo) => void;

  constructor(opts: MaaClientOptions = {}) {
    this.opts = opts;
    const hooks = [opts.onAttempt, opts.telemetry ? attemptHook(opts.telemetry, MAA_UPSTREAM) : undefined].filter((h): h is (info: AttemptInfo) => void => h !== undefined);
    if (hooks.length) this.onAttempt = (info) => hooks.forEach((h) => h(info));
    this.userAgent = opts.userAgent?.trim() ? opts.userAgent.trim() : defaultUserAgent();
    this.apiVersion = opts.apiVersion ?? DEFAULT_MAA_API_VERSION;
    if (!/^[A-Za-z0-9._-]+$/.test(this.apiVersion)) throw new InvalidInputError('ERR_MAA_API_VERSION', `MAA api-version ${JSON.stringify(this.apiVersion)} is not valid`);
    if (/[\r\n]/.test(this.userAgent)) throw new InvalidInputError('ERR_MAA_USER_AGENT', 'MAA user agent must be a single line');
  }

  /** The attest URL for an endpoint (exposed for logs and tests). */
  attestUrl(endpoint: Endpoint | string): string {
    return `${toEndpoint('maa', endpoint).origin}/attest/SevSnpVm?api-version=${encodeURIComponent(this.apiVersion)}`;
  }

  /** Attest the evidence; resolves with MAA's JWT. */
  attest(endpoint: Endpoint | string, input: SevSnpVmRequestInput, signal?: AbortSignal): Promise<string> {
    return (this.opts.telemetry ?? NO_TELEMETRY).stage('maa', () => this.attestOnce(endpoint, input, signal));
  }

  /**
   * MAA's TDX platform endpoint (`/attest/TdxVm`, its own api-version): the TD quote and the runtime data
   * whose sha256 is the quote's REPORTDATA[0:32] (src/maa/tdx-vm.ts).
   */
  attestTdxVm(endpoint: Endpoint | string, input: TdxVmRequestInput, signal?: AbortSignal): Promise<string> {
    return (this.opts.telemetry ?? NO_TELEMETRY).stage('maa', async () => {
      const url = `${toEndpoint('maa', endpoint).origin}/attest/TdxVm?api-version=${TDX_VM_API_VERSION}`;
      return this.post(url, serializeTdxVmRequest(input), signal);
    });
  }

  // async: a bad endpoint is a rejection, never a synchronous throw.
  private async attestOnce(endpoint: Endpoint | string, input: SevSnpVmRequestInput, signal?: AbortSignal): Promise<string> {
    return this.post(this.attestUrl(endpoint), serializeSevSnpVmRequest(buildSevSnpVmRequest(input)), signal);
  }

  private async post(url: string, body: string, signal?: AbortSignal): Promise<string> {
    const res = await fetchWithRetry(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', 'user-agent': this.userAgent },
        body,
      },
      {
        upstream: MAA_UPSTREAM,
        ...(this.opts.fetch ? { fetch: this.opts.fetch } : {}),
        timeoutMs: this.opts.timeoutMs ?? 30_000,
        retries: this.opts.retries ?? 3,
        ...(this.opts.baseDelayMs !== undefined ? { baseDelayMs: this.opts.baseDelayMs } : {}),
        ...(this.opts.maxDelayMs !== undefined ? { maxDelayMs: this.opts.maxDelayMs } : {}),
        ...(this.onAttempt ? { onAttempt: this.onAttempt } : {}),
        ...(signal ? { signal } : {}),
        retryOn: (s) => s === 408 || s === 429 || s >= 500,
      },
    );
    const read = { upstream: MAA_UPSTREAM, what: 'MAA attest response', limit: MAX_RESPONSE_BYTES };
    const text = decodeUtf8(await readBounded(res, read), read);
    if (res.status >= 400 && res.status < 500) throw new MaaRefusedError(res.status, parseMaaErrorBody(text));
    if (res.status < 200 || res.status >= 300) {
      const d = parseMaaErrorBody(text);
      const what = [d.code, d.message].filter(Boolean).join(': ');
      throw new UpstreamError(MAA_UPSTREAM, `MAA answered HTTP ${res.status}${what ? `: ${what}` : ''}`, { upstreamStatus: res.status });
    }
    let token: unknown;
    try {
      token = (JSON.parse(text) as { token?: unknown } | null)?.token;
    } catch {
      throw new UpstreamError(MAA_UPSTREAM, 'MAA attest response is not JSON', { code: 'ERR_MAA_RESPONSE', upstreamStatus: res.status });
    }
    if (typeof token !== 'string' || token === '') {
      throw new UpstreamError(MAA_UPSTREAM, 'MAA attest response has no "token"', { code: 'ERR_MAA_RESPONSE', upstreamStatus: res.status });
    }
    registerSecret(token);
    if (!JWS_COMPACT.test(token)) {
      throw new UpstreamError(MAA_UPSTREAM, 'MAA attest response "token" is not a compact JWS', { code: 'ERR_MAA_RESPONSE', upstreamStatus: res.status });
    }
    return token;
  }
}
