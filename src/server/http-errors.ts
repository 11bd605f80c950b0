/**
 * One place that turns any thrown value into the reference's `{"error": "..."}` body and a status.
 * Exactly one response per request; a stack trace never leaves the process.
 */
import type { ErrorRequestHandler } from 'express';
import { SkrError, UpstreamError, type ErrorCode } from '../common/errors';
import { ReleaseRefusedError } from '../akv/vault-release';
import { httpStatusOf } from '../common/error-status';
import { OverloadedError } from './limits';
import { clip } from '../common/clip';
import { describeErrorChain } from '../common/redact';
import { redactString } from './logger';
import type { Logger } from './logger';

/** An error raised by the HTTP layer itself, with headers for the answer (its status comes from its code). */
export class HttpError extends SkrError {
  constructor(code: ErrorCode, message: string, readonly headers?: Record<string, string>) {
    super(code, message);
  }
}

/** HTTP status of whatever ended a request (the same mapping the error handler uses): the code's, from the table. */
export function statusOf(err: unknown): number {
  if (err instanceof SkrError) return httpStatusOf(err.code);
  const e = err as { type?: string; status?: number } | null;
  if (e?.type === 'entity.too.large') return 413;
  if (e && typeof e.status === 'number' && e.status >= 400 && e.status < 500) return e.status;
  return 500;
}

export function badRequest(message: string, code: ErrorCode = 'ERR_BAD_REQUEST'): HttpError {
  return new HttpError(code, message);
}

/** Longest error message a caller receives (its parts quoting outside text are capped at their source). */
export const MAX_ERROR_MESSAGE_CHARS = 1000;

/** Describe an error for the client (HTTP body, gRPC status message): message plus its causes' messages, redacted, bounded. */
export function describe(err: SkrError): string {
  const msg = describeErrorChain(err);
  // A 502/504 names the upstream it is about, whatever the layer below wrote.
  const named = err instanceof UpstreamError && !msg.toLowerCase().includes(err.upstream.toLowerCase()) ? `${err.upstream}: ${msg}` : msg;
  return clip(named, MAX_ERROR_MESSAGE_CHARS);
}

export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    let status = 500;
    let message = 'internal error';
    let code: ErrorCode = 'ERR_INTERNAL';
    const e = err as { type?: string; status?: number; message?: string };
    if (err instanceof SkrError) {
      status = httpStatusOf(err.code);
      message = describe(err);
      code = err.code;
    } else if (e && e.type === 'entity.too.large') {
      status = 413;
      code = 'ERR_BODY_TOO_LARGE';
      message = 'request body is larger than the 1 MiB limit';
    } else if (e && typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
      // body-parser and friends: malformed encodings, aborted requests.
      status = e.status;
      code = 'ERR_BAD_REQUEST';
      message = e.message ? clip(redactString(e.message)) : 'bad request';
    }
    const level = status >= 500 ? 'error' : 'warn';
    // An unexpected error keeps its (redacted) message for the operator; the client sees only "internal error".
    const detail = status === 500 && !(err instanceof SkrError) ? { detail: err instanceof Error ? `${err.name}: ${clip(describeErrorChain(err), MAX_ERROR_MESSAGE_CHARS)}` : typeof err } : {};
    logger.log(level, 'request failed', { method: req.method, path: req.path.slice(0, 200), status, code, error: message, ...detail });
    if (res.headersSent) {
      // The answer has started: the only honest thing left is to cut the connection.
      res.destroy();
      return;
    }
    if (err instanceof HttpError && err.headers) res.set(err.headers);
    if (err instanceof OverloadedError) res.set('retry-after', String(err.retryAfterSeconds));
    // A refused release says why, when the sidecar could tell (bounded at its source: release-explanation.ts).
    const explanation = err instanceof ReleaseRefusedError && err.explanation ? { explanation: err.explanation } : {};
    res.status(status).json({ error: message, ...explanation });
  };
}
