/**
 * Verify an MAA token the way a relying party would, trusting nothing but the configured authority:
 * OpenID metadata → jwks_uri (same origin as the authority) → JWKS → RS256 signature → iss, exp/nbf
 * → the runtime data and REPORT_DATA we sent. The key-release path uses this to check MAA's answer
 * before handing the token to a vault; tests use it to check the emulator.
 */
import { createPublicKey, type KeyObject, type JsonWebKey } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { compactVerify, decodeProtectedHeader } from 'jose';
import { certificateFromDer } from '../asn1/certificate';
import { toHex } from '../common/bytes';
import { InvalidInputError, VerificationError } from '../common/errors';
import { decodeUtf8, readBounded } from '../common/bounded-body';
import { fetchWithRetry, type FetchLike } from '../common/http';
import { maaBaseUrl, MAA_UPSTREAM } from './client';

const MAX_DOC_BYTES = 1 << 20;
const MIN_RSA_BITS = 2048;

/** The authority as an https origin (`https://host[:port]`); a trailing slash is tolerated. */
export function authorityOrigin(authority: string): string {
  if (!/^https:\/\//i.test(authority.trim())) {
    throw new InvalidInputError('ERR_MAA_AUTHORITY', `MAA authority ${JSON.stringify(authority.slice(0, 200))} must be an https URL`);
  }
  return maaBaseUrl(authority);
}

export interface JwksCacheOptions {
  /** Used when a call does not pass its own fetch. */
  fetch?: FetchLike;
  /** Keys older than this are fetched again. Default 1 h. */
  maxAgeMs?: number;
  /** Per-request timeout for metadata and JWKS. Default 10 s. */
  timeoutMs?: number;
  /** Extra attempts on network errors, 408/429/5xx. Default 2. */
  retries?: number;
  baseDelayMs?: number;
  /** Clock for ages; injectable for tests. */
  nowMs?: () => number;
}

export interface JwksEntry {
  fetchedAt: number;
  jwksUri: string;
  keys: Map<string, JsonWebKey>;
}

function jwksError(message: string, cause?: unknown): VerificationError {
  return new VerificationError('maa-jwks', message, cause);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Public key of a JWKS entry: from n/e, or from x5c[0] (MAA's /certs lists kid, kty and x5c only); both must agree. */
export function publicKeyOfJwk(jwk: JsonWebKey, kid: string): KeyObject {
  if (jwk.kty !== 'RSA') throw jwksError(`JWKS key "${kid}" has kty ${String(jwk.kty)}, expected RSA`);
  if (jwk.use !== undefined && jwk.use !== 'sig') throw jwksError(`JWKS key "${kid}" has use ${String(jwk.use)}, expected sig`);
  if (jwk.alg !== undefined && jwk.alg !== 'RS256') throw jwksError(`JWKS key "${kid}" has alg ${String(jwk.alg)}, expected RS256`);
  let fromNe: KeyObject | undefined;
  let fromX5c: KeyObject | undefined;
  try {
    if (typeof jwk.n === 'string' && typeof jwk.e === 'string') {
      fromNe = createPublicKey({ key: { kty: 'RSA', n: jwk.n, e: jwk.e }, format: 'jwk' });
    }
    const x5c = (jwk as { x5c?: unknown }).x5c;
    if (Array.isArray(x5c) && typeof x5c[0] === 'string') {
      // MAA's certificates carry PEM text (SGX collateral) inside their DER: only an exact DER parse is safe.
      fromX5c = certificateFromDer(Buffer.from(x5c[0], 'base64'), 'x5c[0]').publicKey;
    }
  } catch (err) {
    throw jwksError(`JWKS key "${kid}" cannot be imported: ${(err as Error).message}`, err);
  }
  const key = fromNe ?? fromX5c;
  if (!key) throw jwksError(`JWKS key "${kid}" has neither n/e nor x5c`);
  if (fromNe && fromX5c && !fromNe.equals(fromX5c)) throw jwksError(`JWKS key "${kid}": n/e and x5c[0] are different keys`);
  if (key.asymmetricKeyType !== 'rsa') throw jwksError(`JWKS key "${kid}" is not an RSA key`);
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS) throw jwksError(`JWKS key "${kid}" is ${bits}-bit RSA, below ${MIN_RSA_BITS}`);
  return key;
}

/** The keys of a JWKS document by kid; `what` names the document in errors. */
export function keysOfJwks(jwks: unknown, what: string): Map<string, JsonWebKey> {
  if (!isObject(jwks) || !Array.isArray(jwks.keys)) throw jwksError(`${what} has no "keys" array`);
  const keys = new Map<string, JsonWebKey>();
  for (const k of jwks.keys) {
    if (isObject(k) && typeof k.kid === 'string' && k.kid !== '') keys.set(k.kid, k as JsonWebKey);
  }
  if (keys.size === 0) throw jwksError(`${what} holds no key with a kid`);
  return keys;
}

/**
 * JWKS per authority, fetched through the authority's OpenID metadata, kept for maxAgeMs, refreshed
 * at once when a token names a kid we do not hold (MAA rotates signing keys). Concurrent fetches for
 * one authority share a single request.
 */
export class JwksCache {
  private readonly entries = new Map<string, JwksEntry>();
  private readonly inflight = new Map<string, Promise<JwksEntry>>();
  private readonly opts: JwksCacheOptions;
  /** Number of JWKS documents fetched (observability, tests). */
  fetchCount = 0;

  constructor(opts: JwksCacheOptions = {}) {
    this.opts = opts;
  }

  private now(): number {
    return this.opts.nowMs ? this.opts.nowMs() : Date.now();
  }

  /** The signing key `kid` of `authority` (an https origin), fetching or refreshing the JWKS as needed. */
  async keyFor(authority: string, kid: string, fetch?: FetchLike): Promise<KeyObject> {
    const origin = authorityOrigin(authority);
    let entry = this.entries.get(origin);
    const maxAge = this.opts.maxAgeMs ?? 3600_000;
    let fresh = false;
    if (!entry || this.now() - entry.fetchedAt > maxAge) {
      entry = await this.refresh(origin, fetch);
      fresh = true;
    }
    let jwk = entry.keys.get(kid);
    if (!jwk && !fresh) {
      entry = await this.refresh(origin, fetch);
      jwk = entry.keys.get(kid);
    }
    if (!jwk) throw new VerificationError('maa-token-signature', `token key id "${kid}" is not in the JWKS of ${origin}`);
    return publicKeyOfJwk(jwk, kid);
  }

  /** Fetch the authority's JWKS now (single-flight per authority). */
  refresh(authority: string, fetch?: FetchLike): Promise<JwksEntry> {
    const origin = authorityOrigin(authority);
    const running = this.inflight.get(origin);
    if (running) return running;
    const p = this.load(origin, fetch ?? this.opts.fetch)
      .then((entry) => {
        this.entries.set(origin, entry);
        return entry;
      })
      .finally(() => this.inflight.delete(origin));
    this.inflight.set(origin, p);
    return p;
  }

  clear(): void {
    this.entries.clear();
  }

  private async getJson(url: string, what: string, fetch: FetchLike | undefined): Promise<unknown> {
    const res = await fetchWithRetry(
      url,
      { method: 'GET', headers: { accept: 'application/json' } },
      {
        upstream: MAA_UPSTREAM,
        ...(fetch ? { fetch } : {}),
        timeoutMs: this.opts.timeoutMs ?? 10_000,
        retries: this.opts.retries ?? 2,
        ...(this.opts.baseDelayMs !== undefined ? { baseDelayMs: this.opts.baseDelayMs } : {}),
      },
    );
    const read = { upstream: MAA_UPSTREAM, what, limit: MAX_DOC_BYTES };
    const body = decodeUtf8(await readBounded(res, read), read);
    if (res.status !== 200) throw jwksError(`${what}: HTTP ${res.status} from ${new URL(url).host}`);
    try {
      return JSON.parse(body) as unknown;
    } catch {
      // No cause: JSON.parse quotes the body in its message.
      throw jwksError(`${what} is not JSON`);
    }
  }

  private async load(origin: string, fetch: FetchLike | undefined): Promise<JwksEntry> {
    const meta = await this.getJson(`${origin}/.well-known/openid-configuration`, 'MAA OpenID metadata', fetch);
    if (!isObject(meta) || typeof meta.jwks_uri !== 'string') throw jwksError(`OpenID metadata of ${origin} has no jwks_uri`);
    let jwksUrl: URL;
    try {
      jwksUrl = new URL(meta.jwks_uri);
    } catch (err) {
      throw jwksError(`OpenID metadata of ${origin}: jwks_uri is not a URL`, err);
    }
    // Keys only from the authority itself: metadata pointing elsewhere could substitute any signer.
    if (jwksUrl.protocol !== 'https:' || jwksUrl.origin !== origin) {
      throw jwksError(`OpenID metadata of ${origin}: jwks_uri ${jwksUrl.origin} is not on the authority's origin`);
    }
    const jwks = await this.getJson(jwksUrl.href, 'MAA JWKS', fetch);
    this.fetchCount++;
    return { fetchedAt: this.now(), jwksUri: jwksUrl.href, keys: keysOfJwks(jwks, `JWKS of ${origin}`) };
  }
}

export interface VerifyMaaTokenOptions {
  /** The MAA instance that must have issued the token: `https://host[:port]`. */
  authority: string;
  fetch?: FetchLike;
  /** The runtime data sent to MAA (JSON text); `x-ms-runtime` must deep-equal it. */
  expectedRuntimeData?: Buffer;
  /** The 64-byte REPORT_DATA of the attested report; `x-ms-sevsnpvm-reportdata` must equal its hex. */
  expectedReportData?: Buffer;
  now?: Date;
  /** Leeway for exp/nbf against clock drift. Default 60 s. */
  clockToleranceSeconds?: number;
  /** Shared cache; a private one is used per call otherwise. */
  jwksCache?: JwksCache;
  /**
   * A JWKS document (as the authority's jwks_uri serves it) to verify against offline: nothing is fetched.
   * The issuer is still checked against `authority`.
   */
  jwks?: { document: unknown; name: string };
}

/** Verify `token` and return its claims. Throws VerificationError with a step naming what failed. */
export async function verifyMaaToken(token: string, opts: VerifyMaaTokenOptions): Promise<Record<string, unknown>> {
  const origin = authorityOrigin(opts.authority);
  if (opts.expectedReportData !== undefined && opts.expectedReportData.length !== 64) {
    throw new InvalidInputError('ERR_REPORT_DATA', `expected REPORT_DATA is ${opts.expectedReportData.length} bytes, must be 64`);
  }
  let expectedRuntime: unknown;
  if (opts.expectedRuntimeData !== undefined) {
    try {
      expectedRuntime = JSON.parse(opts.expectedRuntimeData.toString('utf8'));
    } catch (err) {
      throw new InvalidInputError('ERR_RUNTIME_DATA', 'expected runtime data is not JSON', err);
    }
  }

  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    if (typeof token !== 'string' || token.split('.').length !== 3) throw new Error('not a compact JWS');
    header = decodeProtectedHeader(token);
  } catch (err) {
    throw new VerificationError('maa-token-signature', `MAA token is malformed: ${(err as Error).message}`, err);
  }
  if (header.alg !== 'RS256') throw new VerificationError('maa-token-signature', `MAA token alg ${String(header.alg)} is not RS256`);
  if (typeof header.kid !== 'string' || header.kid === '') throw new VerificationError('maa-token-signature', 'MAA token header has no kid');

  let key: KeyObject;
  if (opts.jwks !== undefined) {
    const jwk = keysOfJwks(opts.jwks.document, opts.jwks.name).get(header.kid);
    if (!jwk) throw new VerificationError('maa-token-signature', `token key id "${header.kid}" is not in ${opts.jwks.name}`);
    key = publicKeyOfJwk(jwk, header.kid);
  } else {
    key = await (opts.jwksCache ?? new JwksCache()).keyFor(origin, header.kid, opts.fetch);
  }
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(token, key, { algorithms: ['RS256'] }));
  } catch (err) {
    throw new VerificationError('maa-token-signature', `MAA token signature does not verify with key "${header.kid}" of ${origin}`, err);
  }
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch (err) {
    throw new VerificationError('maa-token-signature', 'MAA token payload is not JSON', err);
  }
  if (!isObject(claims)) throw new VerificationError('maa-token-signature', 'MAA token payload is not a JSON object');

  const iss = typeof claims.iss === 'string' ? claims.iss.replace(/\/+$/, '') : undefined;
  if (iss !== origin) throw new VerificationError('maa-token-issuer', `MAA token issuer ${JSON.stringify(claims.iss)} is not ${origin}`);

  const nowS = Math.floor((opts.now ?? new Date()).getTime() / 1000);
  const leeway = opts.clockToleranceSeconds ?? 60;
  if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) throw new VerificationError('maa-token-expired', 'MAA token has no numeric exp');
  if (nowS >= claims.exp + leeway) {
    throw new VerificationError('maa-token-expired', `MAA token expired at ${new Date(claims.exp * 1000).toISOString()}`);
  }
  if (claims.nbf !== undefined) {
    if (typeof claims.nbf !== 'number' || !Number.isFinite(claims.nbf)) throw new VerificationError('maa-token-expired', 'MAA token nbf is not numeric');
    if (nowS + leeway < claims.nbf) {
      throw new VerificationError('maa-token-expired', `MAA token is not valid before ${new Date(claims.nbf * 1000).toISOString()}`);
    }
  }

  if (opts.expectedRuntimeData !== undefined) {
    if (!('x-ms-runtime' in claims)) throw new VerificationError('maa-token-runtime', 'MAA token has no x-ms-runtime claim');
    if (!isDeepStrictEqual(claims['x-ms-runtime'], expectedRuntime)) {
      throw new VerificationError('maa-token-runtime', 'MAA token x-ms-runtime differs from the runtime data that was attested');
    }
  }
  if (opts.expectedReportData !== undefined) {
    const rd = claims['x-ms-sevsnpvm-reportdata'];
    if (typeof rd !== 'string') throw new VerificationError('maa-token-reportdata', 'MAA token has no x-ms-sevsnpvm-reportdata claim');
    if (rd.toLowerCase() !== toHex(opts.expectedReportData)) {
      throw new VerificationError('maa-token-reportdata', 'MAA token x-ms-sevsnpvm-reportdata differs from the REPORT_DATA of the attested report');
    }
  }
  return claims;
}
