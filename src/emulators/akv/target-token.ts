/**
 * Verify the attestation token a release request carries, as the service does: the token's `iss`
 * must be an authority named in the key's release policy, its signing key comes from that
 * authority's OpenID metadata → jwks_uri (same origin, HTTPS), RS256 only, and exp/nbf hold.
 * MAA's JWKS entries carry only kid, kty and x5c, so the key is read from x5c[0] as the sidecar reads it.
 */
import type { KeyObject } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import type { FetchLike } from '../../common/http';
import { keysOfJwks, publicKeyOfJwk } from '../../maa/verify-token';
import { authorityMatches, normalizeAuthority, type ReleasePolicy } from '../../akv/policy';
import { attestationNotVerified } from './errors';

const MAX_METADATA_BYTES = 256 * 1024;

async function getJson(fetch: FetchLike, url: string, what: string): Promise<Record<string, unknown>> {
  let res: Response;
  try {
    res = await fetch(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw attestationNotVerified(`${what} could not be fetched from ${url}: ${(err as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) throw attestationNotVerified(`${what} at ${url} answered HTTP ${res.status}`);
  if (text.length > MAX_METADATA_BYTES) throw attestationNotVerified(`${what} at ${url} is too large`);
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw attestationNotVerified(`${what} at ${url} is not a JSON object`);
}

/** The verified claims of `token`, or a 403 in the service's shape saying why not. */
export async function verifyTargetToken(
  token: string,
  policy: ReleasePolicy,
  opts: { fetch: FetchLike; now: Date },
): Promise<Record<string, unknown>> {
  let iss: unknown;
  try {
    iss = decodeJwt(token).iss;
  } catch (err) {
    throw attestationNotVerified(`the target is not a JWT: ${(err as Error).message}`);
  }
  if (typeof iss !== 'string') throw attestationNotVerified('the target token has no iss claim');
  const authority = policy.anyOf.find((a) => authorityMatches(a.authority, iss));
  const origin = normalizeAuthority(iss);
  if (!authority || origin === undefined) {
    throw attestationNotVerified(`the token issuer ${iss} is not an authority of the key's release policy`);
  }
  const metadata = await getJson(opts.fetch, `${origin}/.well-known/openid-configuration`, 'OpenID metadata');
  const jwksUri = metadata.jwks_uri;
  if (typeof jwksUri !== 'string') throw attestationNotVerified(`OpenID metadata of ${origin} has no jwks_uri`);
  let jwksUrl: URL;
  try {
    jwksUrl = new URL(jwksUri);
  } catch {
    throw attestationNotVerified(`jwks_uri ${jwksUri} is not a URL`);
  }
  if (jwksUrl.origin !== new URL(origin).origin) {
    throw attestationNotVerified(`jwks_uri ${jwksUri} is not on the authority's origin ${new URL(origin).origin}`);
  }
  const jwks = await getJson(opts.fetch, jwksUrl.toString(), 'JWKS');
  if (!Array.isArray(jwks.keys)) throw attestationNotVerified(`JWKS at ${jwksUri} has no keys array`);
  let key: KeyObject;
  try {
    const { kid } = decodeProtectedHeader(token);
    const jwk = typeof kid === 'string' ? keysOfJwks(jwks, `JWKS at ${jwksUri}`).get(kid) : undefined;
    if (!jwk || typeof kid !== 'string') throw new Error(`no key in the JWKS at ${jwksUri} matches the token's kid`);
    key = publicKeyOfJwk(jwk, kid);
  } catch (err) {
    throw attestationNotVerified(`target token rejected: ${(err as Error).message}`);
  }
  try {
    const { payload } = await jwtVerify(token, key, {
      algorithms: ['RS256'],
      currentDate: opts.now,
    });
    return payload as Record<string, unknown>;
  } catch (err) {
    const code = (err as { code?: string }).code ?? 'ERR_JWT';
    throw attestationNotVerified(`target token rejected (${code}): ${(err as Error).message}`);
  }
}
