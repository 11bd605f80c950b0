/**
 * Key Vault / Managed HSM secure-key-release wrapping (PROTOCOLS §5): the released key material is
 * wrapped with a fresh AES KEK (RFC 5649 AES key wrap with padding) and the KEK is RSA-OAEP
 * encrypted to the caller's wrapping key. Ciphertext = OAEP part (modulus bytes) || KWP part.
 */
import {
  constants,
  createCipheriv,
  createDecipheriv,
  getCiphers,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { ConfigError, InvalidInputError, VerificationError } from '../common/errors';
import { wipe } from '../common/bytes';

export type ReleaseEnc = 'CKM_RSA_AES_KEY_WRAP' | 'RSA_AES_KEY_WRAP_256' | 'RSA_AES_KEY_WRAP_384';

export const RELEASE_ENCS: readonly ReleaseEnc[] = ['CKM_RSA_AES_KEY_WRAP', 'RSA_AES_KEY_WRAP_256', 'RSA_AES_KEY_WRAP_384'];

/**
 * OAEP digest per `enc`. The MGF1 digest is the same one: OpenSSL defaults MGF1 to the OAEP digest,
 * which is what Key Vault (PKCS#11 CKM_RSA_AES_KEY_WRAP with SHA-1/MGF1-SHA1) and the reference
 * sidecar (Go rsa.DecryptOAEP, one hash for both) use.
 */
const OAEP_HASH: Record<ReleaseEnc, string> = {
  CKM_RSA_AES_KEY_WRAP: 'sha1',
  RSA_AES_KEY_WRAP_256: 'sha256',
  RSA_AES_KEY_WRAP_384: 'sha384',
};

/** RFC 5649 §3 alternative initial value (the MLI is appended by the cipher). */
const KWP_AIV = Buffer.from('a65959a6', 'hex');

/** Largest material we wrap: far above any RSA-4096 PKCS#8, well below RFC 5649's 2^32 limit. */
const MAX_MATERIAL = 64 * 1024;

export function isReleaseEnc(v: unknown): v is ReleaseEnc {
  return typeof v === 'string' && (RELEASE_ENCS as readonly string[]).includes(v);
}

function oaepHashOf(enc: ReleaseEnc): string {
  if (!isReleaseEnc(enc)) throw new InvalidInputError('ERR_RELEASE_ENC', `unsupported key release enc ${JSON.stringify(enc)}; expected one of ${RELEASE_ENCS.join(', ')}`);
  return OAEP_HASH[enc];
}

function kwpCipherName(kek: Uint8Array): string {
  const bits = kek.length * 8;
  if (bits !== 128 && bits !== 192 && bits !== 256) {
    throw new InvalidInputError('ERR_KEK_LENGTH', `AES key-wrap KEK must be 16, 24 or 32 bytes, got ${kek.length}`);
  }
  const name = `id-aes${bits}-wrap-pad`;
  // Every OpenSSL 3 build Node 20 ships with has it; say so plainly if a custom build does not.
  if (!getCiphers().includes(name)) throw new ConfigError(`this Node/OpenSSL build lacks the ${name} cipher (RFC 5649)`);
  return name;
}

/** RFC 5649 AES key wrap with padding of `plaintext` (1 .. 64 KiB) under `kek` (AES-128/192/256). */
export function aesKwpWrap(kek: Uint8Array, plaintext: Uint8Array): Buffer {
  const name = kwpCipherName(kek);
  if (plaintext.length === 0) throw new InvalidInputError('ERR_KWP_INPUT', 'AES key wrap needs at least one byte of key material');
  if (plaintext.length > MAX_MATERIAL) throw new InvalidInputError('ERR_KWP_INPUT', `key material of ${plaintext.length} bytes exceeds ${MAX_MATERIAL}`);
  const cipher = createCipheriv(name, kek, KWP_AIV);
  return Buffer.concat([cipher.update(plaintext), cipher.final()]);
}

/**
 * RFC 5649 unwrap. OpenSSL checks the AIV, the MLI range and the zero padding; any mismatch is a
 * VerificationError (step `unwrap`), never a partial or garbage result.
 */
export function aesKwpUnwrap(kek: Uint8Array, wrapped: Uint8Array): Buffer {
  const name = kwpCipherName(kek);
  if (wrapped.length < 16 || wrapped.length % 8 !== 0) {
    throw new VerificationError('unwrap', `AES key-wrap ciphertext must be a multiple of 8 bytes and at least 16, got ${wrapped.length}`);
  }
  if (wrapped.length > MAX_MATERIAL + 16) throw new VerificationError('unwrap', `AES key-wrap ciphertext of ${wrapped.length} bytes is too large`);
  let head: Buffer | undefined;
  let tail: Buffer | undefined;
  try {
    const decipher = createDecipheriv(name, kek, KWP_AIV);
    head = decipher.update(wrapped);
    tail = decipher.final();
    return Buffer.concat([head, tail]);
  } catch (e) {
    throw new VerificationError('unwrap', 'AES key-wrap integrity check failed (wrong KEK or corrupted ciphertext)', e);
  } finally {
    wipe(head, tail);
  }
}

function modulusBytes(key: KeyObject, what: string): number {
  if (key.asymmetricKeyType !== 'rsa') {
    throw new InvalidInputError('ERR_WRAPPING_KEY', `${what} must be an RSA key, got ${key.asymmetricKeyType ?? key.type}`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (!bits || bits < 2048) throw new InvalidInputError('ERR_WRAPPING_KEY', `${what} must be RSA-2048 or larger, got ${bits ?? 'unknown'} bits`);
  return Math.ceil(bits / 8);
}

/**
 * Wrap `material` as the vault does for a release: fresh AES-256 KEK, RSA-OAEP(KEK) || KWP(material).
 * Used by the vault emulator; the sidecar only unwraps.
 */
export function wrapKeyMaterial(material: Buffer, wrappingPublicKey: KeyObject, enc: ReleaseEnc): Buffer {
  const oaepHash = oaepHashOf(enc);
  if (wrappingPublicKey.type !== 'public') throw new InvalidInputError('ERR_WRAPPING_KEY', 'wrapping key must be a public key');
  modulusBytes(wrappingPublicKey, 'wrapping key');
  const kek = randomBytes(32);
  try {
    // OAEP output is always exactly the modulus length, which is how the unwrapper splits the parts.
    const encryptedKek = publicEncrypt({ key: wrappingPublicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, kek);
    return Buffer.concat([encryptedKek, aesKwpWrap(kek, material)]);
  } finally {
    wipe(kek);
  }
}

/**
 * Undo wrapKeyMaterial with the private half of the wrapping key. Every failure (wrong key, wrong
 * enc, tampered OAEP or KWP part, bad lengths) is a VerificationError with step `unwrap`.
 */
export function unwrapKeyMaterial(ciphertext: Buffer, wrappingPrivateKey: KeyObject, enc: ReleaseEnc): Buffer {
  const oaepHash = oaepHashOf(enc);
  if (wrappingPrivateKey.type !== 'private') throw new InvalidInputError('ERR_WRAPPING_KEY', 'unwrapping needs the private wrapping key');
  const n = modulusBytes(wrappingPrivateKey, 'wrapping key');
  if (ciphertext.length < n + 16) {
    throw new VerificationError('unwrap', `wrapped key is ${ciphertext.length} bytes; expected ${n} bytes of RSA-OAEP followed by at least 16 bytes of AES key wrap`);
  }
  let kek: Buffer | undefined;
  try {
    try {
      kek = privateDecrypt({ key: wrappingPrivateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, ciphertext.subarray(0, n));
    } catch (e) {
      throw new VerificationError('unwrap', `RSA-OAEP (${oaepHash}) decryption of the KEK failed (wrong wrapping key, wrong enc or corrupted ciphertext)`, e);
    }
    // The vault sends an AES-256 KEK; 128/192 are accepted as the reference sidecar does (aes.NewCipher).
    if (kek.length !== 16 && kek.length !== 24 && kek.length !== 32) {
      throw new VerificationError('unwrap', `decrypted KEK is ${kek.length} bytes; expected an AES key (16, 24 or 32)`);
    }
    return aesKwpUnwrap(kek, ciphertext.subarray(n));
  } finally {
    wipe(kek);
  }
}
