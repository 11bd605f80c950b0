/**
 * A `fetch`-compatible client on node:http/https with two things global fetch cannot do per call
 * without extra packages: trust extra CAs (the local emulators' CA) on top of the system roots,
 * and keep connections alive to the few upstreams the sidecar talks to.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import * as tls from 'node:tls';
import { MalformedAnswerError, MAX_UPSTREAM_BODY_BYTES, readBounded } from './bounded-body';
import { clip } from './clip';
import type { FetchLike, UpstreamAnswer, UpstreamRequest, UpstreamRequestInit } from './http';

export interface HttpsFetchOptions {
  /** Extra trusted CA certificates (PEM), added to the system roots. */
  extraCaPem?: string[];
  /** Keep connections open between requests (default true). */
  keepAlive?: boolean;
  /** Max sockets per host (default 64). */
  maxSockets?: number;
  /** Largest response body accepted (default MAX_UPSTREAM_BODY_BYTES); beyond it the body stream fails. */
  maxResponseBytes?: number;
}

export interface HttpsFetch extends FetchLike {
  /**
   * The same client without fetch's Response/Headers/web stream, for hot paths: the same agents,
   * status/length checks and byte cap, the body collected into one Buffer.
   */
  request: UpstreamRequest;
  /** Close idle kept-alive sockets (tests and shutdown). */
  destroy(): void;
}

function headersToObject(h: RequestInit['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  new Headers(h).forEach((v, k) => {
    out[k] = v;
  });
  return out;
}

function bodyToBuffer(body: RequestInit['body']): Buffer | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof URLSearchParams) return Buffer.from(body.toString(), 'utf8');
  throw new TypeError('httpsFetch supports string, Buffer, ArrayBuffer and URLSearchParams bodies');
}

/** Statuses whose answers carry no body by definition (the fetch Response refuses one for them). */
const NULL_BODY_STATUSES = new Set([204, 205, 304]);

/** The status, or MalformedAnswerError for a status outside 200-599 or a declared length over the cap. */
function checkHead(res: http.IncomingMessage, maxBytes: number): number {
  const status = res.statusCode ?? 0;
  if (!Number.isInteger(status) || status < 200 || status > 599) {
    throw new MalformedAnswerError(`invalid HTTP status ${String(status).slice(0, 10)}`);
  }
  const declared = res.headers['content-length'];
  if (declared !== undefined && (!/^\d+$/.test(declared) || Number(declared) > maxBytes)) {
    throw new MalformedAnswerError(/^\d+$/.test(declared) ? `declared body of ${declared.slice(0, 20)} bytes exceeds the ${maxBytes}-byte limit` : 'invalid Content-Length');
  }
  return status;
}

/**
 * A node response as a fetch Response. Refuses (MalformedAnswerError) a status outside 200-599 or a
 * declared length over the cap; the body stream fails with MalformedAnswerError past the cap. The
 * status text is dropped: nobody reads it, and `Response` throws on control bytes in it.
 */
function toResponse(res: http.IncomingMessage, method: string, maxBytes: number): Response {
  const status = checkHead(res, maxBytes);
  const h = new Headers();
  for (const [k, v] of Object.entries(res.headers)) {
    // Header values node accepted but fetch's Headers refuses are malformed answers too.
    if (Array.isArray(v)) for (const x of v) h.append(k, x);
    else if (v !== undefined) h.set(k, v);
  }
  if (NULL_BODY_STATUSES.has(status) || method === 'HEAD') {
    res.resume();
    return new Response(null, { status, headers: h });
  }
  return new Response(boundedBody(res, maxBytes), { status, headers: h });
}

/**
 * The body as a web stream that fails (MalformedAnswerError) past `maxBytes` or when the answer is
 * cut off, and destroys the socket then or when the reader cancels. Hand-rolled rather than
 * Readable.toWeb: that one throws from a socket callback when data arrives after a cancel.
 */
function boundedBody(res: http.IncomingMessage, maxBytes: number): ReadableStream<Uint8Array> {
  let total = 0;
  let settled = false;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        controller.error(err);
        res.destroy();
      };
      res.on('data', (chunk: Buffer) => {
        if (settled) return;
        total += chunk.length;
        if (total > maxBytes) return fail(new MalformedAnswerError(`body exceeds the ${maxBytes}-byte limit`));
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if ((controller.desiredSize ?? 1) <= 0) res.pause();
      });
      res.on('end', () => {
        if (settled) return;
        settled = true;
        controller.close();
      });
      res.on('error', (e: NodeJS.ErrnoException) => fail(new MalformedAnswerError(`body cut off (${e.code ?? e.name})`, e)));
      res.on('close', () => {
        if (!res.complete) fail(new MalformedAnswerError('body cut off (connection closed)'));
      });
    },
    pull() {
      res.resume();
    },
    cancel() {
      settled = true;
      res.destroy();
    },
  }, { highWaterMark: 4 });
}

/**
 * The body of `res` collected into one Buffer: fails (MalformedAnswerError) past `maxBytes` or when
 * the answer is cut off, destroying the socket then. `done` runs once either way.
 */
function collectBody(res: http.IncomingMessage, maxBytes: number, done: () => void): { body: Promise<Buffer>; discard: () => void } {
  let settled = false;
  let discard = () => undefined as void;
  const body = new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      done();
      res.destroy();
      reject(err);
    };
    discard = () => fail(new MalformedAnswerError('body discarded'));
    res.on('data', (chunk: Buffer) => {
      if (settled) return;
      total += chunk.length;
      if (total > maxBytes) return fail(new MalformedAnswerError(`body exceeds the ${maxBytes}-byte limit`));
      chunks.push(chunk);
    });
    res.on('end', () => {
      if (settled) return;
      settled = true;
      done();
      resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, total));
    });
    res.on('error', (e: NodeJS.ErrnoException) => fail(new MalformedAnswerError(`body cut off (${e.code ?? e.name})`, e)));
    res.on('close', () => {
      if (!res.complete) fail(new MalformedAnswerError('body cut off (connection closed)'));
    });
  });
  // Nobody may be reading (a retried or discarded answer): the failure is the reader's, not the process's.
  body.catch(() => undefined);
  return { body, discard: () => discard() };
}

function headerOf(res: http.IncomingMessage): (name: string) => string | undefined {
  return (name) => {
    const v = res.headers[name];
    return Array.isArray(v) ? v.join(', ') : v;
  };
}

/** An error named TimeoutError, as AbortSignal.timeout's reason is. */
function timeoutError(ms: number): Error {
  const e = new Error(`no complete answer within ${ms} ms`);
  e.name = 'TimeoutError';
  return e;
}

/**
 * A FetchLike seen as an UpstreamRequest (tests and callers that only have a fetch): the body
 * through the bounded reader, the attempt bounded by an AbortSignal.
 */
export function requestViaFetch(fetch: FetchLike, opts: { upstream: string; maxResponseBytes?: number }): UpstreamRequest {
  return async (url, init) => {
    const signals = [init.signal, init.timeoutMs !== undefined ? AbortSignal.timeout(init.timeoutMs) : undefined].filter((s): s is AbortSignal => Boolean(s));
    const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
    const res = await fetch(url, { method: init.method, headers: init.headers, ...(init.body !== undefined ? { body: init.body } : {}), ...(signal ? { signal } : {}) });
    const what = `${init.method} ${url.host}${url.pathname}`;
    return {
      status: res.status,
      header: (name) => res.headers.get(name) ?? undefined,
      body: () => readBounded(res, { upstream: opts.upstream, what, limit: opts.maxResponseBytes ?? MAX_UPSTREAM_BODY_BYTES }),
      discard: () => void res.body?.cancel().catch(() => undefined),
    };
  };
}

export function createHttpsFetch(opts: HttpsFetchOptions = {}): HttpsFetch {
  const keepAlive = opts.keepAlive ?? true;
  const maxSockets = opts.maxSockets ?? 64;
  const maxResponseBytes = opts.maxResponseBytes ?? MAX_UPSTREAM_BODY_BYTES;
  const ca = opts.extraCaPem?.length ? [...tls.rootCertificates, ...opts.extraCaPem] : undefined;
  // One secure context built here rather than a `ca` option: node's https.Agent joins a `ca` list
  // (all system roots) into its connection-pool key several times per request (~0.2 ms each).
  const secureContext = ca ? tls.createSecureContext({ ca }) : undefined;
  const httpsAgent = new https.Agent({ keepAlive, maxSockets, ...(secureContext ? { secureContext } : {}) });
  const httpAgent = new http.Agent({ keepAlive, maxSockets });

  const doFetch = (input: string | URL, init: RequestInit = {}): Promise<Response> =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(String(input));
      if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        reject(new TypeError(`unsupported protocol ${url.protocol}`));
        return;
      }
      const signal = init.signal ?? undefined;
      if (signal?.aborted) {
        reject(signal.reason ?? new Error('aborted'));
        return;
      }
      const body = bodyToBuffer(init.body);
      const headers = headersToObject(init.headers);
      if (body && headers['content-length'] === undefined) headers['content-length'] = String(body.length);
      const mod = url.protocol === 'https:' ? https : http;
      const req = mod.request(
        url,
        { method: init.method ?? 'GET', headers, agent: url.protocol === 'https:' ? httpsAgent : httpAgent },
        (res) => {
          // Nothing here may throw past the request: an upstream's answer is hostile input.
          try {
            resolve(toResponse(res, (init.method ?? 'GET').toUpperCase(), maxResponseBytes));
          } catch (e) {
            res.destroy();
            reject(e instanceof MalformedAnswerError ? e : new MalformedAnswerError(`unusable answer: ${clip(String((e as Error)?.message))}`, e));
          }
        },
      );
      const onAbort = () => req.destroy(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('close', () => signal?.removeEventListener('abort', onAbort));
      req.on('error', reject);
      req.end(body);
    });

  const request: UpstreamRequest = (url: URL, init: UpstreamRequestInit) =>
    new Promise<UpstreamAnswer>((resolve, reject) => {
      const isHttps = url.protocol === 'https:';
      if (!isHttps && url.protocol !== 'http:') {
        reject(new TypeError(`unsupported protocol ${url.protocol}`));
        return;
      }
      const signal = init.signal;
      if (signal?.aborted) {
        reject(signal.reason ?? new Error('aborted'));
        return;
      }
      const body = init.body === undefined ? undefined : Buffer.from(init.body, 'utf8');
      const headers: http.OutgoingHttpHeaders = body ? { ...init.headers, 'content-length': body.length } : init.headers;
      const req = (isHttps ? https : http).request(url, { method: init.method, headers, agent: isHttps ? httpsAgent : httpAgent });
      const stop = (reason: Error) => req.destroy(reason);
      const onAbort = () => stop(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      const timer = init.timeoutMs !== undefined ? setTimeout(() => stop(timeoutError(init.timeoutMs as number)), init.timeoutMs) : undefined;
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('response', (res) => {
        // Nothing here may throw past the request: an upstream's answer is hostile input.
        let status: number;
        try {
          status = checkHead(res, maxResponseBytes);
        } catch (e) {
          finish();
          res.destroy();
          reject(e instanceof MalformedAnswerError ? e : new MalformedAnswerError(`unusable answer: ${clip(String((e as Error)?.message))}`, e));
          return;
        }
        const collected = collectBody(res, maxResponseBytes, finish);
        resolve({ status, header: headerOf(res), body: () => collected.body, discard: collected.discard });
      });
      req.on('error', (e) => {
        finish();
        reject(e);
      });
      req.end(body);
    });

  return Object.assign(doFetch, {
    request,
    destroy: () => {
      httpsAgent.destroy();
      httpAgent.destroy();
    },
  });
}
