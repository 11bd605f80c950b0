/**
 * The one bounded reader for upstream answers (MAA, vault/HSM, IMDS, THIM / AMD KDS / Azure cache),
 * and the one mapping of a malformed answer to a typed error. An upstream that sends a huge, endless,
 * truncated or undecodable body costs at most `limit` bytes and yields UpstreamError (502) naming it.
 */
import { SkrError, UpstreamError } from './errors';

/** Default cap for one upstream body: tokens, JWS, certificates and error bodies are a few KB. */
export const MAX_UPSTREAM_BODY_BYTES = 1 << 20;

/** An answer that is not HTTP we can use (status line, headers, framing, size, encoding). → 502 (error-status.ts) */
export class MalformedAnswerError extends SkrError {
  constructor(message: string, cause?: unknown) {
    super('ERR_UPSTREAM_MALFORMED', message, { cause });
  }
}

export interface BoundedReadOptions {
  /** Upstream name for the error (`maa`, `vault`, `amd-kds`, ...). */
  upstream: string;
  /** What was being read, e.g. `GET host/path`. */
  what: string;
  /** Byte cap; default MAX_UPSTREAM_BODY_BYTES. */
  limit?: number;
}

function malformed(opts: BoundedReadOptions, why: string, cause?: unknown): UpstreamError {
  return new UpstreamError(opts.upstream, `${opts.what}: malformed answer: ${why}`, { code: 'ERR_UPSTREAM_MALFORMED', cause });
}

/** Short reason for a failed body read, never the body itself. */
function readFailure(err: unknown): string {
  if (err instanceof SkrError) return err.message;
  const e = err as { code?: unknown; name?: unknown } | null;
  if (e && typeof e.code === 'string') return `body cut off (${e.code})`;
  if (e && typeof e.name === 'string') return `body cut off (${e.name})`;
  return 'body cut off';
}

/** Read a fetch Response body as bytes, refusing more than the limit; read errors become UpstreamError. */
export async function readBounded(res: Response, opts: BoundedReadOptions): Promise<Buffer> {
  const limit = opts.limit ?? MAX_UPSTREAM_BODY_BYTES;
  const declared = res.headers.get('content-length');
  if (declared !== null && /^\d+$/.test(declared.trim()) && Number(declared) > limit) {
    await res.body?.cancel().catch(() => undefined);
    throw malformed(opts, `declared ${declared.trim().slice(0, 20)} bytes, over the ${limit}-byte limit`);
  }
  if (!res.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let total = 0;
  const reader = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > limit) {
        await reader.cancel().catch(() => undefined);
        throw malformed(opts, `body exceeds the ${limit}-byte limit`);
      }
      chunks.push(Buffer.from(value));
    }
  } catch (e) {
    if (e instanceof UpstreamError) throw e;
    throw malformed(opts, readFailure(e), e);
  } finally {
    reader.releaseLock();
  }
  return Buffer.concat(chunks);
}

/** Strict UTF-8: an answer that is not text is malformed, not silently repaired with U+FFFD. */
export function decodeUtf8(bytes: Buffer, opts: Pick<BoundedReadOptions, 'upstream' | 'what'>): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (e) {
    throw malformed({ ...opts }, 'body is not valid UTF-8', e);
  }
}

/** readBounded + strict UTF-8. */
export async function readBoundedText(res: Response, opts: BoundedReadOptions): Promise<string> {
  return decodeUtf8(await readBounded(res, opts), opts);
}
