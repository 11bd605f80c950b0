/**
 * An @azure/core-rest-pipeline HttpClient on top of a FetchLike. The Azure SDK's default client
 * trusts only the system roots; routing it through createHttpsFetch({ extraCaPem }) lets the
 * official KeyClient talk to the local emulators (and to a vault behind a private CA) without
 * NODE_EXTRA_CA_CERTS or a global TLS override. Only type imports from the pipeline package, so
 * it stays an indirect dependency.
 */
import { Readable } from 'node:stream';
import type {
  HttpClient,
  HttpHeaders,
  PipelineRequest,
  PipelineResponse,
  RawHttpHeaders,
  RequestBodyType,
} from '@azure/core-rest-pipeline';
import { decodeUtf8, MalformedAnswerError, readBounded, MAX_UPSTREAM_BODY_BYTES } from '../common/bounded-body';
import { UpstreamError } from '../common/errors';
import type { FetchLike } from '../common/http';
import { describeRequest } from '../common/http';

/** Case-insensitive header bag with the shape the pipeline expects (names kept as first set). */
class SimpleHeaders implements HttpHeaders {
  private readonly map = new Map<string, { name: string; value: string }>();

  get(name: string): string | undefined {
    return this.map.get(name.toLowerCase())?.value;
  }
  has(name: string): boolean {
    return this.map.has(name.toLowerCase());
  }
  set(name: string, value: string | number | boolean): void {
    this.map.set(name.toLowerCase(), { name, value: String(value) });
  }
  delete(name: string): void {
    this.map.delete(name.toLowerCase());
  }
  toJSON(options?: { preserveCase?: boolean }): RawHttpHeaders {
    const out: RawHttpHeaders = {};
    for (const [lower, { name, value }] of this.map) out[options?.preserveCase ? name : lower] = value;
    return out;
  }
  *[Symbol.iterator](): Iterator<[string, string]> {
    for (const [lower, { value }] of this.map) yield [lower, value];
  }
}

function abortError(message: string): Error {
  const e = new Error(message);
  e.name = 'AbortError';
  return e;
}

async function collect(stream: NodeJS.ReadableStream | ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const iterable: AsyncIterable<unknown> =
    'getReader' in stream ? Readable.fromWeb(stream as Parameters<typeof Readable.fromWeb>[0]) : (stream as AsyncIterable<unknown>);
  for await (const c of iterable) chunks.push(typeof c === 'string' ? Buffer.from(c) : Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

/** Request bodies the SDK sends to Key Vault are JSON strings; streams are buffered (they are small). */
async function toFetchBody(body: RequestBodyType | undefined): Promise<string | Buffer | undefined> {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return body;
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const b = typeof body === 'function' ? body() : body;
  if (typeof (b as { getReader?: unknown }).getReader === 'function' || typeof (b as { pipe?: unknown }).pipe === 'function') {
    return collect(b as NodeJS.ReadableStream);
  }
  throw new TypeError('createSdkHttpClient: Blob, FormData and multipart request bodies are not supported');
}

/** Combine the caller's abort signal and the per-request timeout into one signal for fetch. */
function requestSignal(request: PipelineRequest): { signal?: AbortSignal; done: () => void } {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const onAbort = () => controller.abort(abortError('The operation was aborted.'));
  const external = request.abortSignal;
  if (external) {
    if (external.aborted) onAbort();
    else external.addEventListener('abort', onAbort);
  }
  if (request.timeout > 0) {
    timer = setTimeout(() => {
      controller.abort(abortError(`The request timed out after ${request.timeout} ms.`));
    }, request.timeout);
  }
  return {
    signal: controller.signal,
    done: () => {
      if (timer) clearTimeout(timer);
      external?.removeEventListener('abort', onAbort);
    },
  };
}

function wantsStream(request: PipelineRequest, status: number): boolean {
  const codes = request.streamResponseStatusCodes;
  return codes !== undefined && (codes.has(status) || codes.has(Number.POSITIVE_INFINITY));
}

export interface SdkHttpClientOptions {
  /** Upstream name in errors (`vault`, `identity`). Default `azure`. */
  upstream?: string;
  /** Body cap; default MAX_UPSTREAM_BODY_BYTES. */
  maxResponseBytes?: number;
}

/**
 * An HttpClient for `new KeyClient(url, credential, { httpClient })` and other Azure SDK clients.
 * Every body goes through the bounded reader: an oversized, cut or non-UTF-8 answer is an
 * UpstreamError (ERR_UPSTREAM_MALFORMED) naming the upstream, which the SDK passes through.
 */
export function createSdkHttpClient(fetch: FetchLike, opts: SdkHttpClientOptions = {}): HttpClient {
  const upstream = opts.upstream ?? 'azure';
  const limit = opts.maxResponseBytes ?? MAX_UPSTREAM_BODY_BYTES;
  return {
    async sendRequest(request: PipelineRequest): Promise<PipelineResponse> {
      if (request.multipartBody || request.formData) {
        throw new TypeError('createSdkHttpClient: multipart and form bodies are not supported');
      }
      const headers: Record<string, string> = {};
      for (const [k, v] of request.headers) headers[k] = v;
      const body = await toFetchBody(request.body);
      const sig = requestSignal(request);
      let res: Response;
      try {
        res = await fetch(request.url, { method: request.method, headers, body, signal: sig.signal });
      } catch (err) {
        sig.done();
        if (sig.signal?.aborted) throw sig.signal.reason instanceof Error ? sig.signal.reason : abortError('aborted');
        if (err instanceof MalformedAnswerError) {
          throw new UpstreamError(upstream, `${describeRequest(request.url, request.method)}: malformed answer: ${err.message}`, { code: err.code, cause: err });
        }
        throw err;
      }
      const out = new SimpleHeaders();
      res.headers.forEach((v, k) => out.set(k, v));
      const response: PipelineResponse = { request, status: res.status, headers: out };
      try {
        const read = { upstream, what: describeRequest(request.url, request.method), limit };
        const bytes = await readBounded(res, read);
        // Streamed bodies are buffered too: the SDK asks for them only for downloads, never for keys.
        if (wantsStream(request, res.status)) response.readableStreamBody = Readable.from([bytes]);
        else response.bodyAsText = decodeUtf8(bytes, read);
      } catch (err) {
        if (sig.signal?.aborted) throw sig.signal.reason instanceof Error ? sig.signal.reason : abortError('aborted');
        throw err;
      } finally {
        sig.done();
      }
      return response;
    },
  };
}
