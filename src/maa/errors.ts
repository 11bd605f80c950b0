/** MAA answered, and said no. Distinct from UpstreamError (could not get an answer at all). */
import { SkrError } from '../common/errors';

/** Longest piece of an upstream error text quoted in our messages. */
export const MAX_QUOTED_CHARS = 300;

/**
 * Make upstream error text safe to log and return: one line, no long base64/JWT-like runs (MAA may
 * echo evidence or tokens back), at most MAX_QUOTED_CHARS characters.
 */
export function sanitizeUpstreamText(text: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what must go
  const oneLine = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').replace(/\s+/g, ' ').trim();
  const redacted = oneLine.replace(/[A-Za-z0-9+/_=.-]{40,}/g, '<redacted>');
  return redacted.length > MAX_QUOTED_CHARS ? `${redacted.slice(0, MAX_QUOTED_CHARS)}…` : redacted;
}

/** A 4xx (other than 408/429) from MAA: the evidence or request was refused. → 403 */
export class MaaRefusedError extends SkrError {
  /** HTTP status MAA answered with. */
  readonly maaStatus: number;
  /** MAA's `error.code`, when it sent one. */
  readonly maaCode?: string;
  /** MAA's `error.message` (or quoted plain text), sanitized. */
  readonly maaMessage?: string;

  constructor(maaStatus: number, detail: { code?: string; message?: string }) {
    const what = [detail.code, detail.message].filter((s) => s !== undefined && s !== '').join(': ');
    super('ERR_MAA_REFUSED', `MAA refused the attestation request (HTTP ${maaStatus})${what ? `: ${what}` : ''}`);
    this.maaStatus = maaStatus;
    if (detail.code !== undefined) this.maaCode = detail.code;
    if (detail.message !== undefined) this.maaMessage = detail.message;
  }
}

/**
 * MAA's error body: `{"error": {"code", "message"}}`, also tolerating a top-level `{code, message}`
 * and plain text (quoted, sanitized). Never throws.
 */
export function parseMaaErrorBody(text: string): { code?: string; message?: string } {
  const trimmed = text.trim();
  if (trimmed === '') return {};
  try {
    const j = JSON.parse(trimmed) as unknown;
    if (typeof j === 'object' && j !== null) {
      const o = j as Record<string, unknown>;
      const e = typeof o.error === 'object' && o.error !== null ? (o.error as Record<string, unknown>) : o;
      const out: { code?: string; message?: string } = {};
      if (typeof e.code === 'string') out.code = sanitizeUpstreamText(e.code).slice(0, 100);
      if (typeof e.message === 'string') out.message = sanitizeUpstreamText(e.message);
      if (typeof o.error === 'string' && out.message === undefined) out.message = sanitizeUpstreamText(o.error);
      if (out.code !== undefined || out.message !== undefined) return out;
    }
  } catch {
    // Not JSON: quote it below.
  }
  return { message: `"${sanitizeUpstreamText(trimmed)}"` };
}
