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
/**
 * The same values by their first MIN_SECRET_CHARS characters, each list longest first (a whole token
 * wins over one of its parts): a text is scanned once, position by position, whatever the number of
 * registered values, instead of once per value (which cost ~0.3 ms per log line with a full registry).
 */
const byPrefix = new Map<string, string[]>();
/** Expired values are matched against their expiry when found; a sweep drops them now and then. */
const SWEEP_EVERY_MS = 60_000;
let nextSweep = 0;

function forget(v: string): void {
  secrets.delete(v);
  const key = v.slice(0, MIN_SECRET_CHARS);
  const list = byPrefix.get(key);
  if (!list) return;
  const i = list.indexOf(v);
  if (i >= 0) list.splice(i, 1);
  if (list.length === 0) byPrefix.delete(key);
}

function add(v: string, until: number): void {
  if (v.length < MIN_SECRET_CHARS) return;
  const known = secrets.get(v);
  if (known !== undefined) {
    // Re-registered: the longer life wins (redacting longer is the safe side), and it counts as new.
    secrets.delete(v);
    secrets.set(v, Math.max(known, until));
    return;
  }
  secrets.set(v, until);
  const key = v.slice(0, MIN_SECRET_CHARS);
  const list = byPrefix.get(key);
  if (!list) byPrefix.set(key, [v]);
  else {
    const at = list.findIndex((x) => x.length < v.length);
    list.splice(at < 0 ? list.length : at, 0, v);
  }
  while (secrets.size > MAX_SECRETS) forget(secrets.keys().next().value as string);
}

function sweep(now: number): void {
  if (now < nextSweep) return;
  nextSweep = now + SWEEP_EVERY_MS;
  for (const [v, until] of secrets) if (until <= now) forget(v);
}

/** `s` with every live registered value replaced, scanning left to right (longest match at each position). */
function replaceRegistered(s: string, now: number): string {
  let out = '';
  let last = 0;
  for (let i = 0; i + MIN_SECRET_CHARS <= s.length; ) {
    const candidates = byPrefix.get(s.slice(i, i + MIN_SECRET_CHARS));
    const hit = candidates?.find((c) => s.startsWith(c, i) && (secrets.get(c) ?? 0) > now);
    if (hit === undefined) {
      i++;
      continue;
    }
    out += s.slice(last, i) + REDACTED;
    i += hit.length;
    last = i;
  }
  return last === 0 ? s : out + s.slice(last);
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
    const now = Date.now();
    sweep(now);
    out = replaceRegistered(out, now);
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
