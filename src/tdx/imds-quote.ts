/**
 * The TD quote of a TDREPORT from Azure's IMDS: `POST http://169.254.169.254/acc/tdquote` with
 * `{"report": base64url(TDREPORT)}` answers `{"quote": base64url(quote)}` (the host's quoting enclave signs it).
 *
 * The public clients disagree: Microsoft's C++ library sends `Metadata: true` and reads `Quote`; the Python
 * tools send no Metadata header and read `quote`; the Rust crate sends base64url without padding. We send
 * what the Azure clients send (Metadata: true, JSON, unpadded base64url) and accept either field name and
 * base64 with or without padding, in either alphabet. The answer is bounded and must decode as a TD quote.
 */
import { decodeBase64Strict } from '../common/bytes';
import { InvalidInputError, UpstreamError } from '../common/errors';
import { describeRequest, fetchWithRetry, readBodyLimited, type FetchLike, type RetryOptions } from '../common/http';
import { MAX_QUOTE_BYTES, parseTdQuote } from './quote';
import { TDREPORT_SIZE } from './tdreport';

export const IMDS_BASE = 'http://169.254.169.254';
export const TD_QUOTE_PATH = '/acc/tdquote';
export const TD_QUOTE_UPSTREAM = 'imds-tdquote';
/** base64 of an 8 KiB quote plus JSON framing. */
const MAX_ANSWER_BYTES = 16 * 1024;

export interface TdQuoteClientOptions {
  /** IMDS origin (default the real metadata address; `skr local` points it at its emulator). */
  baseUrl?: string;
  fetch?: FetchLike;
  timeoutMs?: number;
  retries?: number;
  onAttempt?: RetryOptions['onAttempt'];
}

/** The request body, as the Azure clients write it. */
export function tdQuoteRequestBody(tdReport: Buffer): string {
  return JSON.stringify({ report: tdReport.toString('base64url') });
}

/** Decode IMDS's answer (`quote` or `Quote`, any base64 form) into TD quote bytes, or say what is wrong. */
export function parseTdQuoteAnswer(text: string): Buffer {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw new InvalidInputError('ERR_TD_QUOTE', 'IMDS /acc/tdquote answer is not JSON');
  }
  const rec = typeof o === 'object' && o !== null && !Array.isArray(o) ? (o as Record<string, unknown>) : {};
  const v = rec['quote'] ?? rec['Quote'];
  if (typeof v !== 'string' || v.length === 0) throw new InvalidInputError('ERR_TD_QUOTE', 'IMDS /acc/tdquote answer has no "quote" string');
  if (v.length > Math.ceil((MAX_QUOTE_BYTES * 4) / 3) + 4) throw new InvalidInputError('ERR_TD_QUOTE', `IMDS /acc/tdquote quote is longer than ${MAX_QUOTE_BYTES} bytes`);
  const bytes = decodeBase64Strict(v);
  if (!bytes) throw new InvalidInputError('ERR_TD_QUOTE', 'IMDS /acc/tdquote quote is not base64');
  parseTdQuote(bytes);
  return bytes;
}

/** POST the TDREPORT, return the quote's bytes (decoded and shape-checked, not yet verified). */
export async function fetchTdQuote(tdReport: Buffer, opts: TdQuoteClientOptions = {}, signal?: AbortSignal): Promise<Buffer> {
  if (tdReport.length !== TDREPORT_SIZE) throw new RangeError(`a TDREPORT is ${TDREPORT_SIZE} bytes`);
  const url = `${(opts.baseUrl ?? IMDS_BASE).replace(/\/+$/, '')}${TD_QUOTE_PATH}`;
  const what = describeRequest(url, 'POST');
  const res = await fetchWithRetry(
    url,
    { method: 'POST', headers: { Metadata: 'true', 'Content-Type': 'application/json' }, body: tdQuoteRequestBody(tdReport), redirect: 'manual' },
    { upstream: TD_QUOTE_UPSTREAM, fetch: opts.fetch, timeoutMs: opts.timeoutMs ?? 30_000, retries: opts.retries ?? 2, onAttempt: opts.onAttempt, ...(signal ? { signal } : {}) },
  );
  if (res.status < 200 || res.status > 299) {
    await res.body?.cancel().catch(() => undefined);
    throw new UpstreamError(TD_QUOTE_UPSTREAM, `${what} answered ${res.status}`, { upstreamStatus: res.status });
  }
  const body = await readBodyLimited(res, MAX_ANSWER_BYTES, TD_QUOTE_UPSTREAM, what);
  try {
    return parseTdQuoteAnswer(body.toString('utf8'));
  } catch (e) {
    if (e instanceof InvalidInputError) throw new UpstreamError(TD_QUOTE_UPSTREAM, `${what}: ${e.message.slice(0, 200)}`, { code: 'ERR_UPSTREAM_MALFORMED', cause: e });
    throw e;
  }
}
