/**
 * The `key_hsm` field of a released key (PROTOCOLS §5): base64url of the JSON
 * `{"schema_version":"1.0","header":{"kid","alg":"dir","enc"},"ciphertext":b64url}`.
 */
import { SkrError } from '../common/errors';
import { b64url, decodeBase64Strict } from '../common/bytes';
import { isReleaseEnc, RELEASE_ENCS, type ReleaseEnc } from './wrap';

export const KEY_HSM_SCHEMA_VERSION = '1.0';

export interface KeyHsm {
  /** Key id the vault puts in the header (the released key's id). */
  kid: string;
  enc: ReleaseEnc;
  /** RSA-OAEP(KEK) || AES-KWP(material), see wrap.ts. */
  ciphertext: Buffer;
}

/** key_hsm arrives inside a vault response we already verified, so a malformed one is the vault's fault. */
export class KeyHsmError extends SkrError {
  constructor(message: string) {
    super('ERR_KEY_HSM', `malformed key_hsm: ${message}`);
  }
}

/** Bound on the encoded field: a wrapped RSA-4096 PKCS#8 is a few KiB. */
const MAX_KEY_HSM_CHARS = 256 * 1024;

export function encodeKeyHsm(k: KeyHsm): string {
  if (!isReleaseEnc(k.enc)) throw new KeyHsmError(`unknown enc ${JSON.stringify(k.enc)}`);
  const doc = {
    schema_version: KEY_HSM_SCHEMA_VERSION,
    header: { kid: k.kid, alg: 'dir', enc: k.enc },
    ciphertext: b64url(k.ciphertext),
  };
  return b64url(Buffer.from(JSON.stringify(doc), 'utf8'));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function decodeKeyHsm(s: string): KeyHsm & { alg: 'dir'; schemaVersion: string } {
  if (typeof s !== 'string' || s.length === 0) throw new KeyHsmError('expected a non-empty base64url string');
  if (s.length > MAX_KEY_HSM_CHARS) throw new KeyHsmError(`${s.length} characters exceeds ${MAX_KEY_HSM_CHARS}`);
  const json = decodeBase64Strict(s);
  if (!json) throw new KeyHsmError('not base64url');
  let doc: unknown;
  try {
    doc = JSON.parse(json.toString('utf8'));
  } catch {
    throw new KeyHsmError('not JSON');
  }
  if (!isObject(doc)) throw new KeyHsmError('not a JSON object');
  if (doc.schema_version !== KEY_HSM_SCHEMA_VERSION) {
    throw new KeyHsmError(`schema_version ${JSON.stringify(doc.schema_version)} is not "${KEY_HSM_SCHEMA_VERSION}"`);
  }
  const h = doc.header;
  if (!isObject(h)) throw new KeyHsmError('header is not an object');
  if (h.alg !== 'dir') throw new KeyHsmError(`header.alg ${JSON.stringify(h.alg)} is not "dir"`);
  if (!isReleaseEnc(h.enc)) throw new KeyHsmError(`header.enc ${JSON.stringify(h.enc)} is not one of ${RELEASE_ENCS.join(', ')}`);
  if (typeof h.kid !== 'string') throw new KeyHsmError('header.kid is not a string');
  if (typeof doc.ciphertext !== 'string' || doc.ciphertext.length === 0) throw new KeyHsmError('ciphertext is not a non-empty string');
  const ciphertext = decodeBase64Strict(doc.ciphertext);
  if (!ciphertext || ciphertext.length === 0) throw new KeyHsmError('ciphertext is not base64url');
  return { schemaVersion: doc.schema_version, kid: h.kid, alg: 'dir', enc: h.enc, ciphertext };
}
