/**
 * The ephemeral RSA key a release is wrapped to. Its public half travels to MAA as runtime data
 * (`x-ms-runtime.keys`), the vault wraps the released key to it, and only this process can unwrap.
 */
import { createHash, generateKeyPair, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { b64url } from '../common/bytes';
import { SkrError } from '../common/errors';

/** A type alias (not an interface) so it is assignable to node's JsonWebKey. */
export type RuntimeJwk = {
  kty: 'RSA';
  n: string;
  e: string;
  kid: string;
  key_ops: ['encrypt'];
};

export interface WrappingKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  kid: string;
  runtimeJwks: { keys: [RuntimeJwk] };
  /** The exact bytes sent as MAA runtime data (JSON of runtimeJwks); the token's x-ms-runtime must equal them. */
  runtimeData: Buffer;
}

/** RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA public key. */
export function rsaJwkThumbprint(n: string, e: string): string {
  // Required members only, lexicographic order, no whitespace (RFC 7638 §3.2).
  return b64url(createHash('sha256').update(JSON.stringify({ e, kty: 'RSA', n }), 'utf8').digest());
}

const RSA_PARAMS = { modulusLength: 2048, publicExponent: 0x10001 } as const;

function wrappingKeyOf(privateKey: KeyObject, publicKey: KeyObject): WrappingKey {
  const jwk = publicKey.export({ format: 'jwk' });
  if (typeof jwk.n !== 'string' || typeof jwk.e !== 'string') throw new SkrError('ERR_INTERNAL', 'RSA public key exported without n/e');
  const kid = rsaJwkThumbprint(jwk.n, jwk.e);
  const runtimeJwks: { keys: [RuntimeJwk] } = { keys: [{ kty: 'RSA', n: jwk.n, e: jwk.e, kid, key_ops: ['encrypt'] }] };
  return { privateKey, publicKey, kid, runtimeJwks, runtimeData: Buffer.from(JSON.stringify(runtimeJwks), 'utf8') };
}

/** A fresh RSA-2048 wrapping key, generated on the calling thread (blocks the event loop for tens of ms). */
export function createWrappingKey(): WrappingKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', RSA_PARAMS);
  return wrappingKeyOf(privateKey, publicKey);
}

/** The same, generated on libuv's thread pool so the event loop keeps serving requests meanwhile. */
export function createWrappingKeyAsync(): Promise<WrappingKey> {
  return new Promise((resolve, reject) => {
    generateKeyPair('rsa', RSA_PARAMS, (err, publicKey, privateKey) => {
      if (err) {
        reject(new SkrError('ERR_KEYGEN', `RSA-2048 wrapping key generation failed: ${err.message}`, { cause: err }));
        return;
      }
      try {
        resolve(wrappingKeyOf(privateKey, publicKey));
      } catch (e) {
        reject(e);
      }
    });
  });
}
