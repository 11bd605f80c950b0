/**
 * Turn unwrapped release material into the JWK the sidecar hands to the workload: raw bytes for
 * oct/oct-HSM become `{kty:"oct",k}`, PKCS#8 DER for RSA/EC (and -HSM) becomes a private JWK.
 * The -HSM suffix describes where the vault kept the key, not the key, so the JWK kty drops it.
 */
import { createPrivateKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { SkrError } from '../common/errors';
import { b64url } from '../common/bytes';

export type ReleasedKty = 'oct' | 'oct-HSM' | 'RSA' | 'RSA-HSM' | 'EC' | 'EC-HSM';

export const RELEASED_KTYS: readonly ReleasedKty[] = ['oct', 'oct-HSM', 'RSA', 'RSA-HSM', 'EC', 'EC-HSM'];

/** The material came out of a verified vault response; not matching its declared kty is the vault's fault. */
export class ReleasedKeyError extends SkrError {
  constructor(message: string, cause?: unknown) {
    super('ERR_RELEASED_KEY', message, { cause });
  }
}

export interface ReleasedKeyInput {
  kty: string;
  material: Buffer;
  kid?: string;
  key_ops?: string[];
}

function pkcs8Key(material: Buffer, expected: 'rsa' | 'ec', kty: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: material, format: 'der', type: 'pkcs8' });
  } catch (e) {
    throw new ReleasedKeyError(`released ${kty} key material is not a PKCS#8 private key`, e);
  }
  if (key.asymmetricKeyType !== expected) {
    throw new ReleasedKeyError(`released ${kty} key material holds a ${key.asymmetricKeyType ?? 'unknown'} key`);
  }
  return key;
}

export function releasedKeyToJwk(input: ReleasedKeyInput): JsonWebKey {
  const { kty, material } = input;
  if (!(RELEASED_KTYS as readonly string[]).includes(kty)) {
    throw new ReleasedKeyError(`unsupported released key type ${JSON.stringify(kty)}; expected one of ${RELEASED_KTYS.join(', ')}`);
  }
  if (!Buffer.isBuffer(material) || material.length === 0) throw new ReleasedKeyError(`released ${kty} key material is empty`);
  let jwk: JsonWebKey;
  if (kty === 'oct' || kty === 'oct-HSM') {
    jwk = { kty: 'oct', k: b64url(material) };
  } else {
    const key = pkcs8Key(material, kty.startsWith('RSA') ? 'rsa' : 'ec', kty);
    jwk = key.export({ format: 'jwk' });
  }
  if (input.kid !== undefined) jwk.kid = input.kid;
  if (input.key_ops !== undefined) jwk.key_ops = [...input.key_ops];
  return jwk;
}
