/**
 * Access tokens as Entra ID issues them to a managed identity: RS256 JWTs with the resource as
 * `aud`, the v1 issuer `https://sts.windows.net/<tenant>/`, and the principal in `oid`/`appid`.
 * The IMDS emulator signs them; the vault emulator checks them with verifyAccessToken.
 */
import { randomUUID, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, createLocalJWKSet, exportJWK, jwtVerify, SignJWT, type JWK, type JWTPayload } from 'jose';
import { InvalidInputError, VerificationError } from '../../common/errors';

/** Lifetime of an emulated access token (real IMDS tokens live about a day; the brief asks for 1h). */
export const ACCESS_TOKEN_LIFETIME_SECONDS = 3600;

export interface AccessTokenPrincipal {
  clientId: string;
  objectId: string;
}

export interface AccessTokenSigner {
  privateKey: KeyObject;
  /** JWK thumbprint of the public key, carried as `kid` so verifiers can pick the key. */
  kid: string;
}

export interface JsonWebKeySet {
  keys: (JWK & { kid: string; use: 'sig'; alg: 'RS256' })[];
}

/** The v1 token issuer Entra ID puts in managed identity tokens. */
export function stsIssuer(tenantId: string): string {
  return `https://sts.windows.net/${tenantId}/`;
}

/** JWKS (one RS256 signing key) for the emulator's public key, `kid` = RFC 7638 thumbprint. */
export async function jwksFor(publicKey: KeyObject): Promise<JsonWebKeySet> {
  const jwk = await exportJWK(publicKey);
  if (jwk.kty !== 'RSA') throw new InvalidInputError('ERR_IMDS_KEY', 'the access-token signing key must be RSA');
  const kid = await calculateJwkThumbprint(jwk, 'sha256');
  return { keys: [{ ...jwk, kid, use: 'sig', alg: 'RS256' }] };
}

export interface IssueAccessTokenInput {
  signer: AccessTokenSigner;
  tenantId: string;
  principal: AccessTokenPrincipal;
  /** The audience: the `resource` the caller asked for, verbatim. */
  resource: string;
  now?: Date;
  lifetimeSeconds?: number;
}

export interface IssuedAccessToken {
  token: string;
  issuedAt: number;
  expiresOn: number;
  claims: JWTPayload;
}

/** Sign an access token with the claims Entra ID gives an app-only managed identity token. */
export async function issueAccessToken(input: IssueAccessTokenInput): Promise<IssuedAccessToken> {
  const iat = Math.floor((input.now ?? new Date()).getTime() / 1000);
  const exp = iat + (input.lifetimeSeconds ?? ACCESS_TOKEN_LIFETIME_SECONDS);
  const claims: JWTPayload = {
    aud: input.resource,
    iss: stsIssuer(input.tenantId),
    iat,
    nbf: iat,
    exp,
    sub: input.principal.objectId,
    oid: input.principal.objectId,
    appid: input.principal.clientId,
    appidacr: '2',
    idtyp: 'app',
    tid: input.tenantId,
    ver: '1.0',
    uti: randomUUID().replace(/-/g, ''),
    jti: randomUUID(),
  };
  const token = await new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: input.signer.kid })
    .sign(input.signer.privateKey);
  return { token, issuedAt: iat, expiresOn: exp, claims };
}

export interface VerifyAccessTokenOptions {
  /** The issuer's public key; or `jwks` (a JWKS object) to select by `kid`. */
  publicKey?: KeyObject;
  jwks?: { keys: JWK[] };
  /** Expected `iss`, e.g. `https://sts.windows.net/<tenant>/`. */
  issuer: string;
  /** Accepted audience(s), e.g. `https://vault.azure.net`. */
  audience: string | string[];
  now?: Date;
  clockToleranceSeconds?: number;
}

/**
 * Verify an access token: RS256 signature with the given key, `iss`, `aud`, `exp`/`nbf`.
 * Throws VerificationError(step 'access-token') with the reason; returns the claims.
 */
export async function verifyAccessToken(token: string, opts: VerifyAccessTokenOptions): Promise<JWTPayload> {
  if (typeof token !== 'string' || token.split('.').length !== 3) {
    throw new VerificationError('access-token', 'access token is not a compact JWS');
  }
  const options = {
    algorithms: ['RS256'],
    issuer: opts.issuer,
    audience: opts.audience,
    ...(opts.now ? { currentDate: opts.now } : {}),
    ...(opts.clockToleranceSeconds !== undefined ? { clockTolerance: opts.clockToleranceSeconds } : {}),
  };
  try {
    if (opts.publicKey) return (await jwtVerify(token, opts.publicKey, options)).payload;
    if (opts.jwks) return (await jwtVerify(token, createLocalJWKSet(opts.jwks), options)).payload;
  } catch (err) {
    const code = (err as { code?: string }).code ?? 'ERR_JWT';
    throw new VerificationError('access-token', `access token rejected (${code}): ${(err as Error).message}`, err);
  }
  throw new InvalidInputError('ERR_ACCESS_TOKEN_KEY', 'verifyAccessToken needs publicKey or jwks');
}
