/**
 * Redaction of secrets from any text that leaves the process (responses, log lines).
 *
 * Two nets: a pattern (anything JWT-shaped, wherever it sits: `got_eyJ...` has no word boundary
 * before the token), and an exact registry of every token and key value this process holds or
 * received (identity tokens, callers' access tokens, MAA tokens, released key material, the API
 * secret). The registry also catches opaque tokens no pattern knows, and the pieces of a JWT quoted
 * apart from each other (split at their dots).
 */

/** JWT-shaped: base64url JSON header, payload, optional signature. No `\b`: an upstream may glue text to it. */
const JWT = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g;
const BEARER = /\b(Bearer)\s+[A-Za-z0-9._~+/=-]+/gi;
export const REDACTED = '<redacted>';

/** Shorter values could be ordinary words; secrets worth registering are longer than this. */
const MIN_SECRET_CHARS = 12;
/** Registry bound: oldest entries drop out first (a token lives an hour at most anyway). */
const MAX_SECRETS = 1024;

/** Value → when it may be forgotten (ms since epoch; Infinity: only by eviction). Insertion-ordered. */
const secrets = new Map<string, number>();
/** Longest first when redacting, so a whole token wins over one of its parts. */
let ordered: string[] | undefined;

function add(v: string, until: number): void {
  if (v.length < MIN_SECRET_CHARS) return;
  secrets.delete(v);
  secrets.set(v, until);
  while (secrets.size > MAX_SECRETS) secrets.delete(secrets.keys().next().value as string);
  ordered = undefined;
}

function dropExpired(now: number): void {
  let dropped = false;
  for (const [v, until] of secrets) {
    if (until <= now) {
      secrets.delete(v);
      dropped = true;
    }
  }
  if (dropped) ordered = undefined;
}

/**
 * Remember a secret so that it, and each dot-separated part of it past the JWT header (payload,
 * signature), is redacted wherever it appears. The header is public (alg, kid) and shared by many tokens.
 */
export function registerSecret(value: string | undefined | null, opts: { ttlMs?: number } = {}): void {
  if (typeof value !== 'string') return;
  const v = value.trim();
  if (v.length < MIN_SECRET_CHARS) return;
  // Values only one request holds (key material, a caller's token) are not kept longer than needed.
  const until = opts.ttlMs !== undefined ? Date.now() + opts.ttlMs : Infinity;
  add(v, until);
  const parts = v.split('.');
  if (parts.length > 1) for (const p of parts.slice(1)) add(p, until);
}

/** Number of registered values (for tests and metrics). */
export function registeredSecretCount(): number {
  return secrets.size;
}

/** Replace every registered secret and every JWT-shaped run; bearer credentials lose their value. */
export function redactText(s: string): string {
  let out = s;
  // Registered values are at least MIN_SECRET_CHARS long: skip short strings quickly.
  if (secrets.size > 0 && out.length >= MIN_SECRET_CHARS) {
    dropExpired(Date.now());
    ordered ??= [...secrets.keys()].sort((a, b) => b.length - a.length);
    for (const secret of ordered) if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  }
  return out.replace(JWT, (jwt) => `${jwt.split('.')[0]}.${REDACTED}`).replace(BEARER, `$1 ${REDACTED}`);
}

/** An error and its causes (bounded depth) as one redacted line: what a caller or a log may see. */
export function describeErrorChain(err: unknown, maxDepth = 4): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let i = 0; i < maxDepth && e instanceof Error; i++) {
    if (e.message && !parts.some((p) => p.includes(e instanceof Error ? e.message : ''))) parts.push(e.message);
    e = e.cause;
  }
  return redactText(parts.join(': '));
}
