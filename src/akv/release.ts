/**
 * Secure key release, end to end for one request, as one pipeline of explicit parts:
 *
 *   KEK source ──take──▶ KEK ──runtimeData──▶ Attester ──▶ MAA token   (reused with its KEK while valid)
 *   VaultReleaseCall(vault, kid, MAA token, enc) ──▶ release JWS
 *   ReleaseJwsVerifier(JWS, vault) ──▶ payload ──▶ key_hsm ──▶ KEK.unwrap ──▶ JWK
 *
 * The parts are interfaces (attester.ts in src/maa, kek.ts, vault-release.ts, jws.ts); the server
 * wires today's implementations (SEV-SNP evidence + MAA, a software RSA key pool, the SDK's vault
 * call) and another platform wires its own. docs/architecture.md has the picture.
 *
 * What is not redone per request (issue 7): KEKs come pre-generated from a pool; an MAA token is
 * reused together with its KEK while valid (per MAA origin, with a margin before exp); the identity
 * token and the vault's auth challenge are cached per vault; the release JWS chain is verified once
 * per signing chain. Released keys are never cached, and a caller's own access_token never
 * outlives its request. Key buffers are wiped as soon as the JWK exists.
 */
import type { JsonWebKey } from 'node:crypto';
import { toEndpoint, type Endpoint } from '../common/endpoint';
import { InvalidInputError, UpstreamError, VerificationError } from '../common/errors';
import { wipe } from '../common/bytes';
import { NO_TELEMETRY, type Telemetry } from '../common/telemetry';
import type { Attester } from '../maa/attester';
import { quote } from '../common/clip';
import { registerSecret } from '../common/redact';
import { MaaTokenCache, type MaaTokenCacheOptions, type TokenLookup } from '../maa/token-cache';
import { releasedKeyToJwk } from './jwk';
import type { ReleaseJwsVerifier } from './jws';
import { StaleKekError, type KeyEncryptionKey, type KeyEncryptionKeySource } from './kek';
import { decodeKeyHsm } from './key-hsm';
import { ReleaseRefusedError, type VaultReleaseCall } from './vault-release';
import { isReleaseEnc, type ReleaseEnc } from './wrap';

export { ReleaseRefusedError };

export const DEFAULT_RELEASE_ENC: ReleaseEnc = 'CKM_RSA_AES_KEY_WRAP';

/** How long released key material stays in the redaction registry (longer than any request deadline). */
const SECRET_TTL_MS = 10 * 60_000;

export interface KeyReleaseRequest {
  /** The MAA endpoint (parsed once by the caller; a string is parsed here). */
  maaEndpoint: Endpoint | string;
  /** The vault: bare host (`myvault.vault.azure.net`), host:port, or an https URL. */
  akvEndpoint: Endpoint | string;
  /** `name` or `name/version`. */
  kid: string;
  /** Bearer token to use instead of the managed identity. */
  accessToken?: string;
  enc?: ReleaseEnc;
  /** Throws for a key type the caller cannot use (skr release: `--format pem` for an oct key), before the key is unwrapped. */
  checkKeyType?: (kty: string) => void;
}

export interface ReleasedKey {
  jwk: JsonWebKey;
  /** Full key id the vault released (`https://<vault>/keys/<name>/<version>`). */
  keyId: string;
  vaultHost: string;
}

export interface KeyReleaseParts {
  /** Evidence + runtime data → MAA token. */
  attester: Attester;
  /** Where KEKs come from (a pool of software keys today). */
  keks: KeyEncryptionKeySource;
  /** The vault's release call. */
  vault: VaultReleaseCall;
  /** Signature, chain-to-roots and vault-host checks of the release response. */
  jws: ReleaseJwsVerifier;
  /** Reuse of an MAA token with its KEK: default on with a 5 min margin; `{ enabled: false }` turns it off. */
  maaTokenReuse?: MaaTokenCacheOptions | MaaTokenCache<KeyEncryptionKey>;
  /** The `unwrap` stage (everything after the vault's answer) is timed here. */
  telemetry?: Telemetry;
  /** `enc` of requests that name none (default CKM_RSA_AES_KEY_WRAP); always sent to the vault explicitly. */
  enc?: ReleaseEnc;
  /**
   * When the KEK turns out stale (StaleKekError: e.g. a TPM key after a reboot or PCR change), attest
   * once more with a fresh KEK and retry (default true); false surfaces the first cause as it is.
   */
  reattestOnStaleKek?: boolean;
}

const KEY_NAME = /^[0-9a-zA-Z-]{1,127}$/;
const KEY_VERSION = /^[0-9a-zA-Z]{1,64}$/;

export function parseKid(kid: string): { name: string; version?: string } {
  const parts = kid.trim().split('/');
  if (parts.length > 2 || !KEY_NAME.test(parts[0]) || (parts.length === 2 && !KEY_VERSION.test(parts[1]))) {
    throw new InvalidInputError('ERR_KID', `kid ${quote(kid)} is not a key name or name/version (letters, digits and dashes)`);
  }
  return parts.length === 2 ? { name: parts[0], version: parts[1] } : { name: parts[0] };
}

/** `https://host[:port]` from a bare host, host:port or https URL; anything else is refused (ERR_AKV_ENDPOINT). */
export function vaultBaseUrl(endpoint: string): URL {
  return new URL(toEndpoint('akv', endpoint).origin);
}

/** Vault answers that say the target token itself was not accepted: a cached token must not be offered again. */
const TOKEN_REFUSALS = new Set([400, 403]);

/**
 * The verified response must be for the key that was asked for, on the vault that was called: a
 * signed release of another key (or from another vault with a wildcard certificate) is refused.
 */
export function checkReleasedKid(kid: unknown, url: Endpoint, name: string, version: string | undefined): void {
  const refuse = (why: string): never => {
    throw new VerificationError('release-kid', `release response is for another key: ${why}`);
  };
  if (typeof kid !== 'string') refuse('it names no key id');
  let u: URL;
  try {
    u = new URL(kid as string);
  } catch {
    return refuse(`key id ${JSON.stringify(kid)} is not a URL`);
  }
  const parts = u.pathname.split('/').filter(Boolean);
  if (u.origin !== url.origin) refuse(`key id ${kid} is not on ${url.origin}`);
  if (parts[0] !== 'keys' || parts[1]?.toLowerCase() !== name.toLowerCase()) refuse(`key id ${kid} is not key "${name}"`);
  if (version && parts[2]?.toLowerCase() !== version.toLowerCase()) refuse(`key id ${kid} is not version ${version}`);
}

export class KeyReleasePipeline {
  /** MAA tokens with the KEKs they bind, by MAA origin. */
  readonly maaTokens: MaaTokenCache<KeyEncryptionKey>;
  private readonly telemetry: Telemetry;

  constructor(private readonly parts: KeyReleaseParts) {
    this.maaTokens = parts.maaTokenReuse instanceof MaaTokenCache ? parts.maaTokenReuse : new MaaTokenCache<KeyEncryptionKey>(parts.maaTokenReuse);
    this.telemetry = parts.telemetry ?? NO_TELEMETRY;
  }

  /** A token for `maa` and the KEK it binds: reused while valid, else a new KEK attested now. */
  private attested(maa: Endpoint, signal?: AbortSignal): Promise<TokenLookup<KeyEncryptionKey>> {
    return this.maaTokens.get(
      maa,
      async (s) => {
        const kek = await this.parts.keks.take();
        return { token: await this.parts.attester.attest(maa, kek.runtimeData, s), binding: kek };
      },
      signal,
    );
  }

  async release(req: KeyReleaseRequest, signal?: AbortSignal): Promise<ReleasedKey> {
    const { name, version } = parseKid(req.kid);
    const vault = toEndpoint('akv', req.akvEndpoint);
    const maa = toEndpoint('maa', req.maaEndpoint);
    const enc = req.enc ?? this.parts.enc ?? DEFAULT_RELEASE_ENC;
    if (!isReleaseEnc(enc)) throw new InvalidInputError('ERR_RELEASE_ENC', `enc "${String(enc)}" is not supported`);
    try {
      return await this.attempt(req, vault, maa, name, version, enc, signal);
    } catch (e) {
      if (!(e instanceof StaleKekError) || this.parts.reattestOnStaleKek === false || signal?.aborted) throw e;
      // The token (if cached) binds a KEK that cannot unwrap any more: attest once more and retry.
      try {
        return await this.attempt(req, vault, maa, name, version, enc, signal);
      } catch (again) {
        if (again instanceof StaleKekError) {
          throw new StaleKekError(`${again.message} (after attesting again; first attempt: ${e.message})`, again);
        }
        throw again;
      }
    }
  }

  private async attempt(req: KeyReleaseRequest, vault: Endpoint, maa: Endpoint, name: string, version: string | undefined, enc: ReleaseEnc, signal?: AbortSignal): Promise<ReleasedKey> {
    // On a vault's first use the identity token is fetched while MAA works.
    const [lookup] = await Promise.all([this.attested(maa, signal), this.parts.vault.prepare(vault, req.accessToken, signal)]);
    const { token: maaToken, binding: kek } = lookup;
    let jws: string;
    try {
      jws = await this.parts.vault.release({ vault, name, ...(version ? { version } : {}), maaToken, enc, ...(req.accessToken ? { accessToken: req.accessToken } : {}) }, signal);
      // A 2xx without a value is a broken answer, whatever the VaultReleaseCall behind it.
      if (typeof jws !== 'string' || jws === '') throw new UpstreamError('vault', `vault ${vault.host} answered a release without a value`, { code: 'ERR_RELEASE_RESPONSE' });
    } catch (e) {
      if (e instanceof ReleaseRefusedError && TOKEN_REFUSALS.has(e.vaultStatus)) this.maaTokens.invalidate(maa, maaToken);
      throw e;
    }
    try {
      return await this.telemetry.stage('unwrap', () => this.open(jws, vault, name, version, kek, maaToken, enc, req.checkKeyType, signal));
    } catch (e) {
      if (e instanceof StaleKekError) this.maaTokens.invalidate(maa, maaToken);
      throw e;
    }
  }

  /** What remains after the vault answered, all local: verify the JWS, decode key_hsm, unwrap, build the JWK. */
  private async open(jws: string, vault: Endpoint, name: string, version: string | undefined, kek: KeyEncryptionKey, maaToken: string, enc: ReleaseEnc, checkKeyType: ((kty: string) => void) | undefined, signal?: AbortSignal): Promise<ReleasedKey> {
    let payload: Record<string, unknown>;
    try {
      payload = await this.parts.jws.verify(jws, vault.hostname);
    } catch (e) {
      // Not a JWS at all is a malformed answer (502); a JWS that does not verify stays a refusal (403).
      if (e instanceof VerificationError && e.step === 'jws-format') {
        throw new UpstreamError('vault', `vault ${vault.host} answered a malformed release: ${e.message}`, { code: 'ERR_UPSTREAM_MALFORMED', cause: e });
      }
      throw e;
    }
    const released = (payload.response as { key?: { key?: Record<string, unknown> } } | undefined)?.key?.key;
    if (!released || typeof released.key_hsm !== 'string' || typeof released.kty !== 'string') {
      throw new UpstreamError('vault', 'release response carries no key with key_hsm', { code: 'ERR_RELEASE_RESPONSE' });
    }
    checkReleasedKid(released.kid, vault, name, version);
    const keyHsm = decodeKeyHsm(released.key_hsm);
    // The vault wraps with the enc it was asked for; another one is not ours to accept silently.
    if (keyHsm.enc !== enc) {
      wipe(keyHsm.ciphertext);
      throw new VerificationError('release-enc', `release response is wrapped with enc ${keyHsm.enc}, but ${enc} was requested`);
    }
    checkKeyType?.(released.kty);
    const material = await kek.unwrap(keyHsm, { maaToken, ...(signal ? { signal } : {}) });
    try {
      const keyId = typeof released.kid === 'string' ? released.kid : `${vault.origin}/keys/${name}${version ? `/${version}` : ''}`;
      const keyOps = Array.isArray(released.key_ops) ? (released.key_ops.filter((x) => typeof x === 'string') as string[]) : undefined;
      const jwk = releasedKeyToJwk({ kty: released.kty, material, kid: keyId, ...(keyOps ? { key_ops: keyOps } : {}) });
      // Redacted from anything logged while this release is still around (its deadline at most).
      for (const f of ['k', 'd', 'p', 'q', 'dp', 'dq', 'qi'] as const) registerSecret((jwk as Record<string, unknown>)[f] as string | undefined, { ttlMs: SECRET_TTL_MS });
      return { jwk, keyId, vaultHost: vault.host };
    } finally {
      wipe(material, keyHsm.ciphertext);
    }
  }
}
