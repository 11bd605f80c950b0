/**
 * A `fetch`-compatible client on node:http/https with two things global fetch cannot do per call
 * without extra packages: trust extra CAs (the local emulators' CA) on top of the system roots,
 * and keep connections alive to the few upstreams the sidecar talks to.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { Readable } from 'node:stream';
import * as tls from 'node:tls';
import type { FetchLike } from './http';

export interface HttpsFetchOptions {
  /** Extra trusted CA certificates (PEM), added to the system roots. */
  extraCaPem?: string[];
  /** Keep connections open between requests (default true). */
  keepAlive?: boolean;
  /** Max sockets per host (default 64). */
  maxSockets?: number;
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

export function createHttpsFetch(opts: HttpsFetchOptions = {}): HttpsFetch {
  const keepAlive = opts.keepAlive ?? true;
  const maxSockets = opts.maxSockets ?? 64;
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
          const h = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            if (Array.isArray(v)) for (const x of v) h.append(k, x);
            else if (v !== undefined) h.set(k, v);
          }
          const status = res.statusCode ?? 0;
          const noBody = status === 204 || status === 304 || (init.method ?? 'GET').toUpperCase() === 'HEAD';
          if (noBody) res.resume();
          const stream = noBody ? null : (Readable.toWeb(res) as unknown as ReadableStream<Uint8Array>);
          resolve(new Response(stream, { status, statusText: res.statusMessage ?? '', headers: h }));
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
