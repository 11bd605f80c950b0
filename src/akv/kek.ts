/**
 * The key-encryption key (KEK) of a release: the vault wraps the released key to its public half
 * (RSA-OAEP of a fresh AES key, then AES-KWP of the key material, with the OAEP hash chosen by
 * `enc`), and only its holder can unwrap. Its public JWKS is the runtime data the attester binds
 * into the MAA token, which is how the vault knows whom it wraps to.
 *
 * ACI/AKS use a software RSA-2048 key from a pool (software-kek.ts); an Azure confidential VM uses the
 * vTPM's ephemeral key (src/cvm/tpm-kek.ts), another implementation of the same interface.
 */
import type { JsonWebKey } from 'node:crypto';
import { VerificationError } from '../common/errors';
import type { KeyHsm } from './key-hsm';

export interface UnwrapContext {
  /** The MAA token the release was made with (a TPM-resident key may need its claims). */
  maaToken: string;
  signal?: AbortSignal;
}

export interface KeyEncryptionKey {
  /** The public JWK the vault wraps to. */
  readonly publicJwk: JsonWebKey;
  /** The exact runtime data bytes sent to MAA (JSON of `{"keys":[publicJwk]}`). */
  readonly runtimeData: Buffer;
  /**
   * Undo the vault's wrapping of `keyHsm.ciphertext` (RSA-OAEP with SHA-1/256/384 by `keyHsm.enc`,
   * then AES-KWP) and return the key material; the caller wipes it. Failures are
   * VerificationError step `unwrap`.
   */
  unwrap(keyHsm: KeyHsm, ctx: UnwrapContext): Promise<Buffer>;
}

/** Hands out a KEK no other release has had (a pool, or a fresh key). */
export interface KeyEncryptionKeySource {
  take(): Promise<KeyEncryptionKey>;
}

/**
 * The KEK can no longer unwrap what was wrapped to it because its platform state changed since it was
 * attested (a TPM key after a reboot or a PCR change). The pipeline then attests once more with a
 * fresh KEK and retries; a second StaleKekError ends the release. Step `unwrap`.
 */
export class StaleKekError extends VerificationError {
  constructor(message: string, cause?: unknown) {
    super('unwrap', message, cause);
  }
}

