/**
 * A `fetch`-compatible client on node:http/https with two things global fetch cannot do per call
 * without extra packages: trust extra CAs (the local emulators' CA) on top of the system roots,
 * and keep connections alive to the few upstreams the sidecar talks to.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import * as tls from 'node:tls';
import { MalformedAnswerError, MAX_UPSTREAM_BODY_BYTES } from './bounded-body';
import { clip } from './clip';
import type { FetchLike } from './http';

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

/**
 * A node response as a fetch Response. Refuses (MalformedAnswerError) a status outside 200-599 or a
 * declared length over the cap; the body stream fails with MalformedAnswerError past the cap. The
 * status text is dropped: nobody reads it, and `Response` throws on control bytes in it.
 */
function toResponse(res: http.IncomingMessage, method: string, maxBytes: number): Response {
  const status = res.statusCode ?? 0;
  if (!Number.isInteger(status) || status < 200 || status > 599) {
    throw new MalformedAnswerError(`invalid HTTP status ${String(status).slice(0, 10)}`);
  }
  const declared = res.headers['content-length'];
  if (declared !== undefined && (!/^\d+$/.test(declared) || Number(declared) > maxBytes)) {
    throw new MalformedAnswerError(/^\d+$/.test(declared) ? `declared body of ${declared.slice(0, 20)} bytes exceeds the ${maxBytes}-byte limit` : 'invalid Content-Length');
  }
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

  return Object.assign(doFetch, {
    destroy: () => {
      httpsAgent.destroy();
      httpAgent.destroy();
    },
  });
}
