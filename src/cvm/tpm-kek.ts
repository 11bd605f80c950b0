/**
 * The key-encryption key of a confidential VM: the vTPM's ephemeral RSA-2048 key (CVM-PROTOCOL §4.3,
 * §7), the second implementation of src/akv/kek.ts next to the software key of ACI. Key Vault wraps
 * the released key to the token's TpmEphemeralEncryptionKey; only this vTPM, with PCR0–7 as they were
 * at attestation, can undo the RSA part:
 *
 *   key_hsm.header.kid == TpmEphemeralEncryptionKey; ciphertext = RSA-OAEP (256 B) || AES-KWP
 *   the loaded key (or one re-derived with CreatePrimary and the exact template) has the token's modulus
 *   PolicyPCR session over sha256:0–7 → RSA_Decrypt(OAEP, hash by enc, empty label) → AES key
 *   AES-KWP unwrap of the rest in software; the AES key is wiped.
 *
 * The key is derived, not stored: the same template, PCRs and NULL seed give the same key, so within a
 * boot one loaded copy serves every release (no key generation per request). After a reboot (new NULL
 * seed) or a PCR change the TPM answers with another key or a policy failure: that is a StaleKekError,
 * on which the pipeline attests once more. One lock serialises all TPM use of the attester and the KEK
 * (the ephemeral key and NV indices are VM-global, and swtpm has three object slots).
 */
import type { JsonWebKey } from 'node:crypto';
import { decodeJwt } from 'jose';
import { DeviceError, VerificationError, type SkrError } from '../common/errors';
import { wipe } from '../common/bytes';
import { StaleKekError, type KeyEncryptionKey, type KeyEncryptionKeySource, type UnwrapContext } from '../akv/kek';
import type { KeyHsm } from '../akv/key-hsm';
import { aesKwpUnwrap, type ReleaseEnc } from '../akv/wrap';
import { EPHEMERAL_KEY_ATTRIBUTES, ephemeralKeyTemplate, PCRS_0_7, policyAuth, policyPcrDigest, rsaKeyOf, TPM_RH, TPM_SE, TpmClient, TpmError, type RsaPublicArea } from '../tpm';
import { Serializer } from '../tpm/transport';
import { TPM_KEY_KID } from './guest-attestation';

/** The RSA part of key_hsm for the RSA-2048 ephemeral key. */
export const TPM_KEK_RSA_BYTES = 256;

/** OAEP hash (= MGF1 hash) per `enc` (CVM-PROTOCOL §7). */
export const TPM_OAEP_HASH: Readonly<Record<ReleaseEnc, 'sha1' | 'sha256' | 'sha384'>> = {
  CKM_RSA_AES_KEY_WRAP: 'sha1',
  RSA_AES_KEY_WRAP_256: 'sha256',
  RSA_AES_KEY_WRAP_384: 'sha384',
};

const HASH_NAME = { sha1: 'SHA-1', sha256: 'SHA-256', sha384: 'SHA-384' } as const;

function fail(message: string, cause?: unknown): VerificationError {
  return new VerificationError('unwrap', `TPM unwrap: ${message}`, cause);
}

/** The TPM itself failed (not the ciphertext): a device error, 500, as every other TPM failure. */
function tpmFailure(message: string, cause: TpmError): DeviceError {
  return new DeviceError('ERR_TPM_RC', `TPM unwrap: ${message}`, { cause });
}

/**
 * What a TPM error on the decrypt path means for a release (§7.1). A policy failure (PCR0–7 changed
 * since attestation) or a key that is gone is stale: attesting again can help. A ciphertext the TPM
 * cannot decrypt under the asked enc is a refusal (403, step `unwrap`); anything else is the TPM (or
 * our key) failing: 500, ERR_TPM_RC. Each names the mistake it stands for.
 */
export function explainTpmUnwrapError(e: TpmError, ctx: { enc: ReleaseEnc; cipherBytes: number }): SkrError {
  const hash = HASH_NAME[TPM_OAEP_HASH[ctx.enc]];
  switch (e.rcName) {
    case 'TPM_RC_POLICY_FAIL':
      return new StaleKekError(`TPM unwrap: ${e.message} (PCR0-7 are not what the key was bound to at attestation)`, e);
    case 'TPM_RC_HANDLE':
    case 'TPM_RC_REFERENCE_H0':
      return new StaleKekError(`TPM unwrap: ${e.message}: the ephemeral key is no longer loaded (TPM reset or VM reboot)`, e);
    case 'TPM_RC_AUTH_UNAVAILABLE':
      return tpmFailure(`${e.message}: the ephemeral key has no userWithAuth and takes only its PolicyPCR session, not a password`, e);
    case 'TPM_RC_SIZE':
      return fail(
        `${e.message}: RSA_Decrypt takes exactly the ${TPM_KEK_RSA_BYTES}-byte RSA part of key_hsm, got ${ctx.cipherBytes} bytes ` +
          '(the whole RSA||KWP blob, or a decoder that dropped trailing zero bytes)',
        e,
      );
    case 'TPM_RC_SCHEME':
      return tpmFailure(`${e.message}: the key's scheme does not allow OAEP (a key created with scheme RSAES instead of NULL)`, e);
    case 'TPM_RC_FAILURE':
    case 'TPM_RC_VALUE':
      return fail(
        `${e.message}: the TPM could not OAEP-${hash} decrypt the RSA part (enc ${ctx.enc}): the vault wrapped with another enc ` +
          '(OAEP hash), with RSAES, or to another key',
        e,
      );
    default:
      return tpmFailure(`${e.message} on the RSA part (OAEP-${hash}, enc ${ctx.enc})`, e);
  }
}

/**
 * RSA_Decrypt of `cipher` with the ephemeral key under a fresh PolicyPCR session (sha256:0–7), OAEP
 * with the hash `enc` names and an empty label. The session is flushed whatever happens; TPM errors
 * come back explained (explainTpmUnwrapError).
 */
export async function tpmOaepDecrypt(tpm: TpmClient, key: number, cipher: Buffer, enc: ReleaseEnc): Promise<Buffer> {
  const session = await tpm.startAuthSession(TPM_SE.POLICY);
  return tpm.withHandle(session.handle, async (s) => {
    try {
      await tpm.policyPcr(s, [PCRS_0_7]);
      return await tpm.rsaDecrypt(key, policyAuth(s), cipher, { scheme: 'oaep', hash: TPM_OAEP_HASH[enc] });
    } catch (e) {
      if (e instanceof TpmError) throw explainTpmUnwrapError(e, { enc, cipherBytes: cipher.length });
      throw e;
    }
  });
}

/** The RSA public key a TPM public area holds, as a JWK with the kid the token carries. */
export function ephemeralJwk(area: RsaPublicArea): JsonWebKey {
  const j = rsaKeyOf(area).export({ format: 'jwk' });
  return { kid: TPM_KEY_KID, kty: 'RSA', key_ops: ['encrypt'], e: j.e, n: j.n };
}

/** The modulus (base64url) of the token's top-level TpmEphemeralEncryptionKey: the key Key Vault wraps to. */
export function tokenTpmKeyModulus(maaToken: string): string | undefined {
  let claims: Record<string, unknown>;
  try {
    claims = decodeJwt(maaToken) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const rt = claims['x-ms-runtime'];
  const keys = typeof rt === 'object' && rt !== null ? (rt as { keys?: unknown }).keys : undefined;
  if (!Array.isArray(keys)) return undefined;
  const k = keys.find((x: unknown) => typeof x === 'object' && x !== null && (x as { kid?: unknown }).kid === TPM_KEY_KID) as { n?: unknown } | undefined;
  return typeof k?.n === 'string' ? k.n : undefined;
}

export interface LoadedKey {
  handle: number;
  /** TPM2B_PUBLIC (what the AzureGuest request carries as EncKeyPub). */
  outPublic: Buffer;
  /** The PolicyPCR digest the key is bound to. */
  authPolicy: Buffer;
  n: string;
  jwk: JsonWebKey;
}

/**
 * Hands out the vTPM's current ephemeral key as a KEK. Every KEK of one boot and PCR state is the same
 * key (the protocol derives it deterministically), kept loaded once; it is re-derived when it is gone.
 */
/** One TPM user at a time: a Serializer, or the sidecar's device gate (its run takes an optional signal). */
export interface TpmLock {
  run<T>(fn: () => Promise<T>): Promise<T>;
}

export class TpmKekSource implements KeyEncryptionKeySource {
  private current?: LoadedKey;

  constructor(
    readonly tpm: TpmClient,
    /** Shared with the CVM attester: one TPM sequence at a time. */
    readonly lock: TpmLock = new Serializer(),
  ) {}

  take(): Promise<KeyEncryptionKey> {
    return this.lock.run(async () => new TpmKek(this, (await this.loaded()).jwk));
  }

  /**
   * The loaded key if it is still there, still ours and still bound to the current PCR0–7; else a freshly
   * derived one. A key whose policy no longer matches the PCRs can decrypt nothing: it is flushed here,
   * so the next KEK (and the attester, which certifies this key) is the vTPM's key of the moment.
   * Call under the lock.
   */
  async loaded(): Promise<LoadedKey> {
    const pcrs = await this.tpm.pcrRead(PCRS_0_7.hash, PCRS_0_7.pcrs);
    const policy = policyPcrDigest(PCRS_0_7, [...pcrs.values()]);
    if (this.current) {
      const cur = this.current;
      let ours = false;
      try {
        const pub = await this.tpm.readPublic(cur.handle);
        // Same modulus and attributes: still our key (a handle reused after a TPM reset names another object).
        ours = ephemeralJwk(pub.public).n === cur.n && pub.public.objectAttributes === EPHEMERAL_KEY_ATTRIBUTES;
      } catch (e) {
        if (!(e instanceof TpmError)) throw e;
        // TPM_RC_HANDLE / VALUE: gone with a TPM reset. Any other refusal leaves it possibly loaded: flush below.
        ours = !['TPM_RC_HANDLE', 'TPM_RC_VALUE', 'TPM_RC_REFERENCE_H0'].includes(e.rcName);
      }
      if (ours && cur.authPolicy.equals(policy)) return cur;
      this.current = undefined;
      // Ours but bound to PCRs that changed: useless, flushed. Not ours (another object now): only forgotten.
      if (ours) await this.tpm.flushContext(cur.handle).catch(() => undefined);
      else this.tpm.forgetHandle(cur.handle);
    }
    const key = await this.tpm.createPrimary(TPM_RH.NULL, ephemeralKeyTemplate(policy));
    const jwk = ephemeralJwk(key.public);
    this.current = { handle: key.handle, outPublic: key.outPublic, authPolicy: key.public.authPolicy, n: String(jwk.n), jwk };
    return this.current;
  }

  /** Flush the loaded key (a PCR change made it useless); the next use derives the current one. Under the lock. */
  async forget(n: string): Promise<void> {
    const cur = this.current;
    if (!cur || cur.n !== n) return;
    this.current = undefined;
    await this.tpm.flushContext(cur.handle).catch(() => undefined);
  }

  /** Flush the loaded key (shutdown). */
  close(): Promise<void> {
    return this.lock.run(async () => {
      const cur = this.current;
      this.current = undefined;
      if (cur) await this.tpm.flushContext(cur.handle).catch(() => undefined);
    });
  }
}

export class TpmKek implements KeyEncryptionKey {
  readonly runtimeData: Buffer;

  constructor(
    private readonly source: TpmKekSource,
    readonly publicJwk: JsonWebKey,
  ) {
    this.runtimeData = Buffer.from(JSON.stringify({ keys: [publicJwk] }), 'utf8');
  }

  async unwrap(keyHsm: KeyHsm, ctx: UnwrapContext): Promise<Buffer> {
    if (keyHsm.kid !== TPM_KEY_KID) {
      throw fail(`key_hsm.header.kid is ${JSON.stringify(keyHsm.kid.slice(0, 128))}, expected ${TPM_KEY_KID}: the vault wrapped to another key of the token`);
    }
    const tokenN = tokenTpmKeyModulus(ctx.maaToken);
    if (tokenN === undefined) throw fail(`the MAA token carries no ${TPM_KEY_KID} in x-ms-runtime.keys`);
    // An attester that derives its own key (AzureGuestAttester) certifies the vTPM's key of the moment:
    // another key than the KEK's means PCR0-7 changed or the TPM was reset in between.
    if (tokenN !== this.publicJwk.n) {
      // This KEK's key is not the vTPM's any more: drop it so the re-attestation gets the current one.
      await this.source.lock.run(() => this.source.forget(String(this.publicJwk.n)));
      throw new StaleKekError(`TPM unwrap: the MAA token's ${TPM_KEY_KID} is not this KEK's key: the vTPM's key changed between taking the KEK and attesting (PCR0-7 changed or the TPM was reset)`);
    }
    const ct = keyHsm.ciphertext;
    const kwpBytes = ct.length - TPM_KEK_RSA_BYTES;
    if (kwpBytes < 16 || kwpBytes % 8 !== 0) {
      throw fail(
        `key_hsm ciphertext of ${ct.length} bytes is not ${TPM_KEK_RSA_BYTES} bytes of RSA-OAEP followed by an AES key wrap ` +
          '(a multiple of 8 bytes, at least 16): truncated, or a decoder dropped trailing zero bytes',
      );
    }
    const tpm = this.source.tpm;
    const aesKey = await this.source.lock.run(async () => {
      const key = await this.source.loaded();
      if (key.n !== tokenN) {
        throw new StaleKekError(
          `TPM unwrap: the vTPM's ephemeral key (re-derived for the current PCR0-7 and boot) is not the ${TPM_KEY_KID} of the MAA token: ` +
            'the VM rebooted or PCR0-7 changed since attestation',
        );
      }
      try {
        return await tpmOaepDecrypt(tpm, key.handle, ct.subarray(0, TPM_KEK_RSA_BYTES), keyHsm.enc);
      } catch (e) {
        // The loaded key's policy no longer matches the PCRs: it is of no use to anyone.
        if (e instanceof StaleKekError) await this.source.forget(key.n);
        throw e;
      }
    });
    try {
      if (aesKey.length !== 16 && aesKey.length !== 24 && aesKey.length !== 32) {
        throw fail(`the TPM decrypted a ${aesKey.length}-byte value; expected an AES key (16, 24 or 32 bytes)`);
      }
      return aesKwpUnwrap(aesKey, ct.subarray(TPM_KEK_RSA_BYTES));
    } finally {
      wipe(aesKey);
    }
  }
}
